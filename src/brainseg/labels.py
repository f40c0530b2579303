"""What kind of labels a dataset has: tumor outlines, or boxes (as the Kaggle dataset's are).

Read from the preprocess audit (metrics/data.json), which counts the polygons that are axis-aligned
rectangles; the preprocess stage's summary and the model card both ask.
"""

# Above this share of rectangular polygons the labels are boxes, not outlines.
BOX_LABELS_FROM = 0.95


def labels_are_boxes(audit: dict) -> bool:
    return audit.get("rectangle_fraction", 0.0) >= BOX_LABELS_FROM
