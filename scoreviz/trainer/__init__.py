"""The MoCo(+FT) reference trainer: ``scoreviz train`` / ``python -m scoreviz.trainer``."""
