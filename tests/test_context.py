import threading

import pytest
import torch

import fan_convert
from fan_convert.context import NoActiveFrames, active_frames, check_frame_count, check_frames, infer_frames, nearest_key, select_key


@pytest.mark.parametrize(
    "t, expected",
    [(4, 4), (8, 8), (16, 16), (6, 8), (12, 16), (2, 4), (20, 16), (1, 4), (5, 4), (7, 8), (10, 8), (11, 8), (13, 16), (100, 16)],
)
def test_nearest_key_paper_rule(t, expected):
    assert nearest_key(t, (4, 8, 16)) == expected


def test_nearest_key_ties_go_to_the_higher_key_for_any_key_order():
    assert nearest_key(6, (8, 4)) == 8
    assert nearest_key(3, (2, 4, 6)) == 4


def test_frames_context_nests_and_restores():
    assert active_frames() is None
    with fan_convert.frames(8):
        assert active_frames() == 8
        with fan_convert.frames(4):
            assert active_frames() == 4
        assert active_frames() == 8
    assert active_frames() is None


def test_frames_context_restores_after_an_exception():
    with pytest.raises(KeyError):
        with fan_convert.frames(8):
            raise KeyError
    assert active_frames() is None


@pytest.mark.parametrize("bad", [0, -4, 2.5, "8", True, None])
def test_frames_rejects_non_positive_integers(bad):
    with pytest.raises(ValueError, match="positive integer"):
        with fan_convert.frames(bad):
            pass


def test_selection_is_private_to_each_thread():
    seen = {}
    barrier = threading.Barrier(2)

    def work(t):
        with fan_convert.frames(t):
            barrier.wait()  # both threads are inside their own selection now
            seen[t] = active_frames()

    threads = [threading.Thread(target=work, args=(t,)) for t in (4, 16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert seen == {4: 4, 16: 16}
    assert active_frames() is None


def test_select_key_without_active_frames_names_the_site_and_the_fix():
    with pytest.raises(NoActiveFrames, match=r"'layer1.bn'.*fan_convert.frames\(T\)"):
        select_key((4, 8), "layer1.bn")
    assert select_key((8,)) == 8  # one key needs no selection


def test_infer_frames_reads_clip_layouts():
    assert infer_frames((torch.zeros(2, 3, 8, 4, 4),), {}) == 8
    assert infer_frames((), {"x": torch.zeros(2, 3, 6, 4, 4)}) == 6
    assert infer_frames(([torch.zeros(1, 3, 8, 4, 4), torch.zeros(1, 3, 32, 4, 4)],), {}) == 32
    assert infer_frames((torch.zeros(2, 8, 3, 4, 4),), {}, frame_axis=1) == 8
    assert infer_frames((torch.zeros(8, 3, 4, 4),), {}) is None


def test_clip_length_is_separate_from_the_selected_sub_network():
    from fan_convert.context import clip, clip_frames

    assert clip_frames() is None
    with fan_convert.frames(8):
        assert clip_frames() == 8  # nothing better known
        with clip(16):
            assert clip_frames() == 16 and active_frames() == 8  # explicit selection still wins
    with clip(6):
        assert active_frames() == 6
    assert clip_frames() is None and active_frames() is None


def test_check_frames_sits_beside_check_frame_count():
    assert check_frames([16, 4, 8]) == (4, 8, 16) and check_frames(8) == (8,)
    assert check_frame_count(3) == 3
    for bad, message in (([], "empty"), ([4, 4], "more than once"), ([0], "positive integer"), ([True], "positive integer")):
        with pytest.raises(ValueError, match=message):
            check_frames(bad)
    assert fan_convert.surgery.check_frames is check_frames  # the old import path keeps working
