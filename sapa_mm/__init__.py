"""SAPA feature upsampling for OpenMMLab."""
__version__ = '0.1.0'
