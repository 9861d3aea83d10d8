"""The student as a model (stages 3 and 5): loading and saving it (``student``, ``lora``), the
accelerator and optimizer (``accelerator``), attention over packed rows (``attention``), the TEA
anchor on its embedding (``anchor``), FLOP estimates (``flops``)."""
