import math

import numpy as np
import pytest

from segnet.evaluation import metrics


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    labels = np.array([[0, 0, 1], [1, 2, 2]])
    predictions = np.array([[0, 1, 1], [1, 2, 0]])
    assert metrics.confusion_matrix(labels, predictions, 3).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_confusion_matrix_ignores_labels_outside_the_classes():
    labels = np.array([0, 1, 3, 255, -1])
    predictions = np.array([0, 0, 1, 2, 2])
    cm = metrics.confusion_matrix(labels, predictions, 3)
    assert cm.sum() == 2
    assert cm.tolist() == [[1, 0, 0], [1, 0, 0], [0, 0, 0]]


def test_confusion_matrices_of_images_add_up():
    a = metrics.confusion_matrix(np.array([0, 1]), np.array([0, 0]), 2)
    b = metrics.confusion_matrix(np.array([1, 1]), np.array([1, 0]), 2)
    both = metrics.confusion_matrix(np.array([0, 1, 1, 1]), np.array([0, 0, 1, 0]), 2)
    assert (a + b).tolist() == both.tolist()


def test_confusion_matrix_rejects_bad_predictions_and_shapes():
    with pytest.raises(ValueError):
        metrics.confusion_matrix(np.array([0, 1]), np.array([0, 5]), 2)
    with pytest.raises(ValueError):
        metrics.confusion_matrix(np.zeros((2, 2)), np.zeros(4), 2)


def test_scores_of_a_hand_made_confusion():
    # rows: true class, columns: predicted class
    cm = np.array([[8, 2, 0],
                   [5, 5, 0],
                   [0, 0, 0]])  # class 2 never labelled, never predicted
    assert metrics.pixel_accuracy(cm) == pytest.approx(13 / 20)
    assert metrics.class_accuracy(cm)[:2].tolist() == pytest.approx([8 / 10, 5 / 10])
    assert math.isnan(metrics.class_accuracy(cm)[2])
    # IoU = TP / (TP + FP + FN): class 0: 8 / (8 + 5 + 2); class 1: 5 / (5 + 2 + 5)
    iou = metrics.class_iou(cm)
    assert iou[:2].tolist() == pytest.approx([8 / 15, 5 / 12])
    assert math.isnan(iou[2])
    assert metrics.mean_iou(cm) == pytest.approx((8 / 15 + 5 / 12) / 2)
    assert metrics.mean_class_accuracy(cm) == pytest.approx(0.65)


def test_a_class_predicted_but_never_labelled_counts_in_mean_iou_with_zero():
    cm = np.array([[3, 1],
                   [0, 0]])
    assert metrics.class_iou(cm).tolist() == [0.75, 0.0]
    assert metrics.mean_iou(cm) == pytest.approx(0.375)
    assert math.isnan(metrics.class_accuracy(cm)[1])
    assert metrics.mean_class_accuracy(cm) == pytest.approx(0.75)


def test_perfect_and_empty_confusions():
    perfect = np.diag([5, 0, 7])
    assert metrics.pixel_accuracy(perfect) == 1.0
    assert metrics.mean_iou(perfect) == 1.0
    empty = np.zeros((3, 3), np.int64)
    assert math.isnan(metrics.pixel_accuracy(empty))
    assert math.isnan(metrics.mean_iou(empty))


def test_summary_names_every_class():
    s = metrics.summary(np.array([[1, 1], [0, 2]]), ["road", "car"])
    assert s["pixel_accuracy"] == pytest.approx(0.75)
    assert s["pixels"] == 4
    assert s["class_iou"] == pytest.approx({"road": 0.5, "car": 2 / 3})
    assert s["class_accuracy"] == pytest.approx({"road": 0.5, "car": 1.0})
