from .coco import SYNONYMS, CocoConcepts, EvalSample, concept_name
from .colors import COLOURS, instance_colours
from .dataset import ConceptSegmentationDataset, collate
from .mixture import DatasetMixture

__all__ = ["CocoConcepts", "EvalSample", "ConceptSegmentationDataset", "DatasetMixture", "collate", "concept_name", "COLOURS",
           "SYNONYMS", "instance_colours"]
