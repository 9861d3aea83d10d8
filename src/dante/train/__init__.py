"""Student training (stages 3-5): DANTE losses, data/packing, curriculum, the loop."""
