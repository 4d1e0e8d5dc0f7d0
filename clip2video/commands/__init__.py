"""The ``clip2video`` verbs: one module each, thin argument parsing that calls one function below."""
