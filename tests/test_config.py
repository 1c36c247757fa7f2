import pytest

from reid_augment.config import Recipe, dump_recipe, from_dict, load_recipe, recipe_to_dict
from reid_augment.errors import InputError


def test_paper_recipes_carry_the_paper_settings():
    market, fashion = load_recipe("market1501"), load_recipe("deepfashion")
    assert (market.train.batch_size, market.train.rec_steps, market.train.ref_steps) == (16, 22000, 14000)
    assert (fashion.train.batch_size, fashion.train.rec_steps, fashion.train.ref_steps) == (6, 40000, 30000)
    for r in (market, fashion):
        assert (r.train.lr, r.train.beta1, r.train.beta2) == (2e-5, 0.5, 0.999)
    assert market.model.num_levels == 5 and fashion.model.num_levels == 6


def test_unknown_keys_and_bad_values_are_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr_decay: 0.1\n")
    with pytest.raises(InputError, match="unknown key 'lr_decay'"):
        load_recipe(bad)
    bad.write_text("train:\n  num_workers: 8\n  batch_size: 3\n")  # An older recipe: its removed key is ignored.
    with pytest.warns(UserWarning, match=r"bad.yaml.train: num_workers was removed \(nothing read it.*\); ignored$"):
        assert load_recipe(bad).train.batch_size == 3
    with pytest.raises(InputError, match="expected int"):
        load_recipe("tiny", ["train.batch_size=eight"])
    with pytest.raises(InputError, match="ref_loss must be one of"):
        load_recipe("tiny", ["loss.ref_loss=ssim"])
    with pytest.raises(InputError, match="unknown recipe"):
        load_recipe("nope")


def test_overrides_and_round_trip():
    recipe = load_recipe("tiny", ["train.rec_steps=5", "loss.alpha=0.5"])
    assert recipe.train.rec_steps == 5 and recipe.loss.alpha == 0.5 and recipe.name == "tiny"
    assert from_dict(Recipe, recipe_to_dict(recipe)) == recipe
    assert "rec_steps: 5" in dump_recipe(recipe)


def test_override_values_in_e_notation_are_floats():
    # YAML 1.1 reads 3e-4 as a string; a --set value should mean what it says.
    assert load_recipe("tiny", ["train.lr=3e-4"]).train.lr == 3e-4
    assert load_recipe("tiny", ["model.heatmap_sigma=4"]).model.heatmap_sigma == 4.0
    with pytest.raises(InputError, match="expected float"):
        load_recipe("tiny", ["train.lr=fast"])
