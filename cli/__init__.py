"""The ``keras-fada`` command line (installed as ``keras_fada.cli``)."""
