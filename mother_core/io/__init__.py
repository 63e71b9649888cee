"""The one I/O seam: find models on disk and read their tensors, whatever the checkpoint format."""
