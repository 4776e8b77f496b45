"""What a run directory's files say: how a checkpoint was chosen, said beside every mIoU."""

from keras_fada.training.run_dir import checkpoint_choice


def test_checkpoint_choice_of_each_kind_of_checkpoint(tmp_path):
    stage = tmp_path / "adapt"
    (stage / "snapshots").mkdir(parents=True)
    (stage / "trained.json").write_text('{"steps": 400, "train_s": 1.0}')
    assert checkpoint_choice(str(stage / "segmentor.weights.h5")) == "last step 400"
    assert checkpoint_choice(str(stage / "segmentor.keras")) == "last step 400"
    assert checkpoint_choice(str(stage / "snapshots" / "segmentor_iter200.weights.h5")) == "snapshot step 200"
    assert checkpoint_choice(str(tmp_path / "segmentor.weights.h5")) == "as given"  # no trained.json
    assert checkpoint_choice("g2c_sd.pth") == "as given"


def test_checkpoint_choice_of_a_selection_marks_the_oracle():
    def selection(score):
        return {"score": score, "chosen": {"step": 200, "checkpoint": "adapt/snapshots/x"}}

    assert checkpoint_choice("x", selection("last")) == "last step 200"
    assert checkpoint_choice("x", selection("snd")) == "selected by snd (label-free): step 200"
    assert checkpoint_choice("x", selection("oracle")) == "oracle: step 200 chosen on target val"
