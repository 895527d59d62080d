"""lensframe-token-entropy: an example lensframe plugin (docs/WRITING_VIEWS.md).

One view type, `token_entropy` (view.py), registered through the `lensframe.views` entry point, and
the dataset op it needs, `token_entropy` (op.py), registered when the view module is imported.
"""
__version__ = "0.1.0"
