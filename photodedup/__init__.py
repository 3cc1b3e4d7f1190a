"""photodedup: find duplicate and near-duplicate photos with CLIP embeddings."""

__version__ = "0.1.0"
