"""Inference: fill-mask, text classification and token classification, for `predict.py` and Python users.

    from minibert import FillMask
    fill = FillMask.from_pretrained("models/zh-small")
    print(fill("三国人物诸葛[MASK]"))
    print(fill("我们要发展[MASK][MASK]。", targets=["经济", "政治"])[0].ranking)   # words, by PLL
    print(fill("[MASK][MASK]是蜀汉丞相", beam=5)[0].filled)                      # beam search fill

`from_pretrained` takes a folder or a Hugging Face name in the local cache (files.find_model).
`stream` gives the results a batch at a time, for writing them out as they come.

TextClassifier predicts what the model's config.json problem_type says: a label with its softmax
probability (single label), the set of labels whose sigmoid probability is above a threshold
(multi-label), or the value, the raw output (regression). TokenClassifier (tag.py) gives the entities of a
text with their exact offsets, or a segmentation model's words.
"""

from .classify import Classification, MultiLabelClassification, Regression, TextClassifier
from .fill_mask import Candidate, FillMask, FillResult, MaskResult, TargetScore
from .tag import Entity, Tagged, TokenClassifier

__all__ = ["Candidate", "Classification", "Entity", "FillMask", "FillResult", "MaskResult", "MultiLabelClassification",
           "Regression", "TargetScore", "Tagged", "TextClassifier", "TokenClassifier"]
