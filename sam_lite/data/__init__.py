from .coco import SYNONYMS, CocoConcepts, EvalSample, concept_name
from .colors import COLOURS, instance_colours
from .dataset import ConceptSegmentationDataset, collate

__all__ = ["CocoConcepts", "EvalSample", "ConceptSegmentationDataset", "collate", "concept_name", "COLOURS",
           "SYNONYMS", "instance_colours"]
