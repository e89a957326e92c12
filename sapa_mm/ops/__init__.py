"""The SAPA operator. Depends on torch alone.

The functional API (``sapa_similarity``, ``sapa_aggregate``, ``sapa_upsample``) checks
its arguments, picks a backend from the table of :mod:`.backends` and calls the
dispatcher ops ``torch.ops.sapa_mm.*`` defined in :mod:`.library`;
``sapa_deform_upsample`` (SAPA-D, the op ``sapa_mm::deform_upsample``) is in :mod:`.deform`.
"""
from . import library
from .deform import sapa_deform_upsample
from .reference import (aggregate_reference, deform_upsample_reference, similarity_reference,
                        upsample_reference)
from .sapa import BACKENDS, resolve_backend, sapa_aggregate, sapa_similarity, sapa_upsample

__all__ = [
    'sapa_similarity', 'sapa_aggregate', 'sapa_upsample', 'resolve_backend', 'BACKENDS', 'library',
    'similarity_reference', 'aggregate_reference', 'upsample_reference',
    'sapa_deform_upsample', 'deform_upsample_reference',
]
