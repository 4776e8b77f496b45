"""Backend-specific kernels behind ``keras_fada.ops`` (imported only on their own backend), and
``keras_internals``: the private Keras API keras-fada relies on, in one module."""
