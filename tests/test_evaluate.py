"""cnncli.inspect.evaluate: metrics on hand-built logits, and a real run's evaluation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cnncli.errors import DataError, UsageError
from cnncli.inspect.evaluate import (
    classification_metrics,
    evaluate_run,
    expected_calibration_error,
    most_confidently_wrong,
    softmax,
)
from cnncli.inspect.predict import predict_files

NAMES3 = ["cat", "dog", "fox"]


def test_metrics_of_a_hand_built_case():
    # Predictions (argmax): cat, dog, dog, fox, cat; labels: cat, dog, fox, fox, dog.
    logits = np.array([[3, 0, 0], [0, 2, 0], [0, 1, 0.5], [0, 0, 4], [1, 0, 0]], np.float32)
    labels = np.array([0, 1, 2, 2, 1])
    m = classification_metrics(logits, labels, NAMES3)
    assert m.accuracy == pytest.approx(3 / 5)
    assert m.num_examples == 5
    assert m.top5_accuracy is None  # 3 classes: top-5 is meaningless
    assert m.confusion == [[1, 0, 0], [1, 1, 0], [0, 1, 1]]
    cat, dog, fox = m.per_class
    assert (cat.precision, cat.recall, cat.support, cat.predicted) == (0.5, 1.0, 1, 2)
    assert cat.f1 == pytest.approx(2 / 3)
    assert (dog.precision, dog.recall) == (0.5, 0.5) and dog.f1 == pytest.approx(0.5)
    assert (fox.precision, fox.recall) == (1.0, 0.5) and fox.f1 == pytest.approx(2 / 3)
    assert [c.accuracy for c in m.per_class] == [c.recall for c in m.per_class]
    # mean cross-entropy, by hand
    expected = np.mean([math.log(np.exp(row).sum()) - row[y] for row, y in zip(logits.astype(np.float64), labels)])
    assert m.loss == pytest.approx(expected, rel=1e-12)


def test_class_never_predicted_or_absent():
    logits = np.array([[1, 0, 0], [1, 0, 0]], np.float32)
    m = classification_metrics(logits, np.array([0, 1]), NAMES3)
    assert m.per_class[1].precision is None and m.per_class[1].recall == 0.0 and m.per_class[1].f1 == 0.0
    assert m.per_class[2].recall is None and m.per_class[2].f1 is None and m.per_class[2].support == 0


def test_top5_with_more_than_five_classes():
    logits = np.tile(np.arange(7, dtype=np.float32)[::-1], (3, 1))  # class 0 ranks first, class 6 last
    m = classification_metrics(logits, np.array([0, 4, 6]), [str(i) for i in range(7)])
    assert m.accuracy == pytest.approx(1 / 3)
    assert m.top5_accuracy == pytest.approx(2 / 3)  # class 4 is 5th: in; class 6 is 7th: out


def test_ece_known_cases():
    # Every prediction 80% sure, half of them right: ECE = |0.5 - 0.8| = 0.3.
    probs = np.tile([0.8, 0.2], (10, 1))
    labels = np.array([0] * 5 + [1] * 5)
    ece, bins = expected_calibration_error(probs, labels)
    assert ece == pytest.approx(0.3)
    assert len(bins) == 15 and sum(b.count for b in bins) == 10
    full = [b for b in bins if b.count]
    assert len(full) == 1 and full[0].lo < 0.8 <= full[0].hi
    # Perfectly calibrated: 100% sure and always right.
    ece, _ = expected_calibration_error(np.tile([1.0, 0.0], (4, 1)), np.zeros(4, int))
    assert ece == 0.0
    # The same through logits: log-probabilities are logits.
    m = classification_metrics(np.log(probs), labels, ["a", "b"])
    assert m.ece == pytest.approx(0.3)


def test_most_confidently_wrong_order():
    logits = np.log(np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.05, 0.95]]))
    worst = most_confidently_wrong(logits, np.array([1, 0, 1, 1]), 5)
    assert [w.index for w in worst] == [0, 1, 2]  # index 3 is right
    assert worst[0].confidence == pytest.approx(0.9) and worst[0].true_probability == pytest.approx(0.1)
    assert softmax(logits).sum(axis=1) == pytest.approx(np.ones(4))


@pytest.fixture(scope="module")
def loaded(trained_run):
    from cnncli.runs.load import load_run

    return load_run(trained_run)


def test_eval_reproduces_the_logged_final_metrics(loaded, trained_run):
    result = evaluate_run(loaded)
    summary = json.loads((trained_run / "summary.json").read_text())
    last = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()][-1]
    assert result.checkpoint_step == summary["steps"] == last["step"]
    assert result.accuracy == summary["eval_accuracy"] == last["eval_accuracy"]
    assert result.loss == pytest.approx(summary["eval_loss"], abs=1e-5)
    assert result.split == "test" and result.source == "digits"


def test_confusion_sums_to_the_number_of_examples(loaded):
    result = evaluate_run(loaded, worst=3)
    cm = np.array(result.confusion)
    assert cm.shape == (10, 10)
    assert cm.sum() == result.num_examples == 359
    assert np.trace(cm) == round(result.accuracy * 359)
    assert [c.support for c in result.per_class] == list(cm.sum(axis=1))
    assert result.top5_accuracy is not None and result.top5_accuracy >= result.accuracy
    assert result.throughput > 0 and 0 <= result.ece <= 1
    assert len(result.worst) == 3 and result.worst[0].confidence >= result.worst[-1].confidence


def _digits_npz(path, x_test, y_test, **extra):
    from cnncli.data.digits import load_digits_split

    train, _, _ = load_digits_split("train")
    np.savez(path, x_train=train.x[..., 0], y_train=train.y, x_test=x_test, y_test=y_test, **extra)
    return f"npz:{path}"


def test_other_source_with_the_same_shape_and_classes(loaded, tmp_path):
    from cnncli.data.digits import load_digits_split

    test, _, _ = load_digits_split("test")
    source = _digits_npz(tmp_path / "same.npz", test.x[..., 0], test.y)
    other = evaluate_run(loaded, source=source)
    assert other.accuracy == evaluate_run(loaded).accuracy
    assert other.source == source and other.warnings == []
    rescaled = evaluate_run(loaded, source=_digits_npz(tmp_path / "x15.npz", test.x[..., 0] * 15, test.y))
    assert rescaled.warnings == [
        f"npz:{tmp_path / 'x15.npz'} [test]: raw values range over 0..240 but the run trained on 0..16; "
        "inputs are normalized with the training statistics, so check the data's scale"
    ]


def test_other_source_with_a_different_shape_is_refused(loaded, tmp_path):
    source = _digits_npz(tmp_path / "wide.npz", np.zeros((4, 8, 9), np.uint8), np.zeros(4, int))
    with pytest.raises(DataError, match=r"examples have shape 8x9x1 but the run .* was trained on 8x8x1"):
        evaluate_run(loaded, source=source)


def test_other_source_with_other_classes_is_refused(loaded, tmp_path):
    source = _digits_npz(tmp_path / "names.npz", np.zeros((4, 8, 8), np.uint8), np.arange(4),
                         class_names=np.array(["a", "b", "c", "d"]))  # fmt: skip
    with pytest.raises(DataError, match=r"class names \['a', 'b', 'c', 'd'\] differ from the run's"):
        evaluate_run(loaded, source=source)


def test_unknown_split_names_the_valid_ones(loaded):
    with pytest.raises(DataError, match="digits: unknown split 'validation'"):
        evaluate_run(loaded, split="validation")


def test_predict_files_npy_and_png(loaded, tmp_path):
    from PIL import Image

    from cnncli.data.digits import load_digits_split

    test, _, _ = load_digits_split("test")
    np.save(tmp_path / "one.npy", test.x[0, ..., 0].astype(np.float32))  # channel axis left out
    np.save(tmp_path / "three.npy", test.x[:3])
    Image.fromarray((test.x[1, ..., 0] * 15).astype(np.uint8)).resize((16, 16)).save(tmp_path / "big.png")
    preds = predict_files(loaded, [tmp_path / "one.npy", tmp_path / "three.npy", tmp_path / "big.png"], top_k=3)
    assert [p.input.rsplit("/", 1)[-1] for p in preds] == ["one.npy", "three.npy[0]", "three.npy[1]", "three.npy[2]", "big.png"]
    for p in preds:
        probs = [t["probability"] for t in p.top]
        assert len(p.top) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-9
    assert preds[0].top == preds[1].top  # the same example, two ways
    assert preds[-1].note == "resized from 16x16 to 8x8"


def test_predict_rejects_bad_inputs(loaded, tmp_path):
    np.save(tmp_path / "bad.npy", np.zeros((5, 5)))
    with pytest.raises(DataError, match=r"bad.npy: array shape 5x5 does not fit the run's input 8x8x1"):
        predict_files(loaded, [tmp_path / "bad.npy"])
    (tmp_path / "x.txt").write_text("1")
    with pytest.raises(UsageError, match="unsupported input type '.txt'"):
        predict_files(loaded, [tmp_path / "x.txt"])
    with pytest.raises(DataError, match="input file not found"):
        predict_files(loaded, [tmp_path / "missing.png"])
