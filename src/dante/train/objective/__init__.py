"""The objective (stage 4): the loss terms as units (``terms``: CE/CWCE, token-level KD, the
policy gradient, the dense on-policy KL, TEA), their pure math (``losses``), the student's forward
pass that computes them (``forward``) and its fused lm_head kernel (``chunked_ce``)."""
