"""storagecarbon: embodied + operational carbon of LLM serving across storage tiers."""

__version__ = "0.1.0"
