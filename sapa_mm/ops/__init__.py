"""The SAPA operator. Depends on torch alone."""
from .deform import SAPADeformFunction, sapa_deform_upsample
from .reference import (aggregate_reference, deform_upsample_reference, similarity_reference,
                        upsample_reference)
from .sapa import (BACKENDS, SAPAAggregateFunction, SAPASimilarityFunction, SAPAUpsampleFunction,
                   resolve_backend, sapa_aggregate, sapa_similarity, sapa_upsample)

__all__ = [
    'sapa_similarity', 'sapa_aggregate', 'sapa_upsample', 'resolve_backend', 'BACKENDS',
    'SAPASimilarityFunction', 'SAPAAggregateFunction', 'SAPAUpsampleFunction',
    'similarity_reference', 'aggregate_reference', 'upsample_reference',
    'sapa_deform_upsample', 'SAPADeformFunction', 'deform_upsample_reference',
]
