"""Student training (stages 3-5). ``loop`` runs it; ``sources`` yield micro-batches (cached
records, the student's own samples), ``objective`` turns them into a loss (its terms as units),
``model`` is the student (loading, LoRA, attention, the TEA anchor)."""
