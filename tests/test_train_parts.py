import pytest
import torch
import torch.nn.functional as F

from fan_convert.data import multi_view_indices, segment_indices
from fan_convert.train import mutual_distillation_loss


def test_loss_equals_the_hand_computation():
    torch.manual_seed(0)
    logits = {t: torch.randn(3, 5) for t in (4, 8, 16)}
    y = torch.tensor([0, 2, 4])
    loss, parts = mutual_distillation_loss(logits, y)
    p_high = torch.softmax(logits[16], dim=-1)

    def kl(student):  # KL(p^H || p^k), averaged over the batch
        return (p_high * (p_high.log() - torch.log_softmax(student, dim=-1))).sum(-1).mean()

    ce = -torch.log_softmax(logits[16], -1)[torch.arange(3), y].mean()
    torch.testing.assert_close(loss, ce + kl(logits[4]) + kl(logits[8]))
    assert set(parts) == {"ce@16", "kl@4", "kl@8"}
    weighted, _ = mutual_distillation_loss(logits, y, weight=0.5)
    torch.testing.assert_close(weighted, ce + 0.5 * (kl(logits[4]) + kl(logits[8])))


def test_teacher_gets_no_gradient_from_distillation():
    teacher = torch.randn(4, 3, requires_grad=True)
    student = torch.randn(4, 3, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0])
    loss, _ = mutual_distillation_loss({16: teacher, 4: student}, y)
    loss.backward()
    expected = torch.autograd.grad(F.cross_entropy(teacher, y), teacher)[0]
    torch.testing.assert_close(teacher.grad, expected)  # only the CE term reaches the teacher
    assert student.grad.abs().sum() > 0
    teacher.grad = None
    loss, _ = mutual_distillation_loss({16: teacher, 4: student}, y, detach_teacher=False)
    loss.backward()
    assert not torch.allclose(teacher.grad, expected)


def test_ce_ablation_and_soft_labels():
    logits = {4: torch.randn(2, 3), 16: torch.randn(2, 3)}
    y = torch.tensor([1, 2])
    loss, parts = mutual_distillation_loss(logits, y, mode="ce")
    torch.testing.assert_close(loss, F.cross_entropy(logits[16], y) + F.cross_entropy(logits[4], y))
    soft = F.one_hot(y, 3).float()
    torch.testing.assert_close(mutual_distillation_loss(logits, soft, mode="ce")[0], loss)
    with pytest.raises(ValueError, match="mode must be one of"):
        mutual_distillation_loss(logits, y, mode="kd")


def test_eval_indices_are_segment_centres():
    assert segment_indices(32, 4, train=False) == [4, 12, 20, 28]
    assert segment_indices(16, 16, train=False) == list(range(16))
    assert segment_indices(10, 4, train=False) == [1, 3, 6, 8]


def test_train_indices_stay_in_their_segments_and_are_reproducible():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        idx = segment_indices(40, 8, train=True, generator=g)
        assert all(5 * i <= j < 5 * (i + 1) for i, j in enumerate(idx))
    a = segment_indices(40, 8, train=True, generator=torch.Generator().manual_seed(3))
    b = segment_indices(40, 8, train=True, generator=torch.Generator().manual_seed(3))
    assert a == b


def test_short_videos_repeat_frames():
    assert segment_indices(3, 8, train=False) == [0, 0, 0, 1, 1, 2, 2, 2]
    assert sorted(set(segment_indices(3, 8, train=True, generator=torch.Generator().manual_seed(0)))) <= [0, 1, 2]
    with pytest.raises(ValueError, match="0 frames"):
        segment_indices(0, 4, train=False)


def test_multi_view_indices_cover_every_frame_count():
    views = multi_view_indices(64, (16, 4, 8), train=False)
    assert list(views) == [4, 8, 16] and [len(v) for v in views.values()] == [4, 8, 16]
