"""The YAML configs; installed as ``keras_fada.configs`` so a non-editable install finds them."""
