import numpy as np

from segnet.classmap import class_map, histogram


def test_ties_keep_the_lower_class():
    scores = np.zeros((3, 1, 2), np.float32)
    scores[1, 0, 1] = scores[2, 0, 1] = 5
    assert class_map(scores).tolist() == [[0, 1]]


def test_ignored_class_is_removed_from_the_argmax_not_just_hidden():
    scores = np.array([[[9.0, 1.0]], [[2.0, 3.0]], [[1.0, 0.0]]], np.float32)
    assert class_map(scores, ignore=0).tolist() == [[1, 1]]
    assert class_map(scores, ignore=None).tolist() == [[0, 1]]


def test_no_softmax_raw_scores_decide():
    scores = np.array([[[-1000.0]], [[-999.0]]], np.float32)
    assert class_map(scores).tolist() == [[1]]


def test_histogram_counts_every_class():
    assert histogram(np.array([[0, 2], [2, 2]], np.uint8), 4).tolist() == [1, 0, 3, 0]
