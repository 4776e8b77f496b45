"""Backend-specific kernels behind ``keras_fada.ops`` (imported only on their own backend)."""
