"""The SAPA operator. Depends on torch alone."""
from .reference import aggregate_reference, similarity_reference, upsample_reference
from .sapa import (BACKENDS, SAPAAggregateFunction, SAPASimilarityFunction, SAPAUpsampleFunction,
                   resolve_backend, sapa_aggregate, sapa_similarity, sapa_upsample)

__all__ = [
    'sapa_similarity', 'sapa_aggregate', 'sapa_upsample', 'resolve_backend', 'BACKENDS',
    'SAPASimilarityFunction', 'SAPAAggregateFunction', 'SAPAUpsampleFunction',
    'similarity_reference', 'aggregate_reference', 'upsample_reference',
]
