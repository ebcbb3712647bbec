import pytest

from reference_models import ConfigError, load_config
from reference_models.config import all_keys


def test_bundled_configs_carry_the_seeds_values():
    p, d = load_config("perceiver"), load_config("direct")
    assert p.optimization.lr == 0.002 and d.optimization.lr == 0.0002
    assert p.dataset.batch_size == 64 and d.dataset.batch_size == 128
    v = p.vision_encoder
    assert (v.use_perceiver, v.perceiver_num_latents, v.perceiver_latent_dim,
            v.perceiver_num_layers) == (True, 64, 1024, 4)
    assert v.use_attention_pooling is False and v.perceiver_pooling == "mean" and v.perceiver_latent_init == "seed"
    assert d.vision_encoder.use_perceiver is False and d.vision_encoder.use_attention_pooling is True
    assert d.vision_encoder.pooling_type == "simple"
    for cfg in (p, d):
        assert (cfg.losses.contrastive, cfg.losses.mrl) == (0.25, 1.0)
        assert cfg.losses.sample_single_mrl_dim is True
        assert cfg.model.projection_dim == 4096
        assert (cfg.vision_encoder.num_tokens, cfg.vision_encoder.hidden_dim) == (577, 1024)
    assert p.text_encoder.name == "openai/clip-vit-large-patch14-336"
    assert d.text_encoder.name == "sentence-transformers/all-mpnet-base-v2"
    assert load_config("perceiver_mrl_alignment.yaml").name == "perceiver_mrl_alignment"


def test_overrides_are_type_checked():
    cfg = load_config("perceiver", ["optimization.lr=2e-4", "dataset.batch_size=128", "losses.mrl_dims=[64, 4096]"])
    assert cfg.optimization.lr == 2e-4 and cfg.dataset.batch_size == 128 and cfg.losses.mrl_dims == [64, 4096]
    with pytest.raises(ConfigError, match=r"key 'dataset.batch_size' = 1.5: expected int"):
        load_config("perceiver", ["dataset.batch_size=1.5"])
    with pytest.raises(ConfigError, match=r"expected one of 'seed', 'randn'"):
        load_config("perceiver", ["vision_encoder.perceiver_latent_init=gaussian"])
    with pytest.raises(ConfigError, match=r"did you mean 'optimization.lr'"):
        load_config("perceiver", ["optimisation.lr=1"])
    with pytest.raises(ConfigError, match="dotted.key=value"):
        load_config("perceiver", ["optimization.lr"])


def test_cross_field_validation(tmp_path):
    with pytest.raises(ConfigError, match="perceiver_num_heads"):
        load_config("perceiver", ["vision_encoder.perceiver_num_heads=7"])
    with pytest.raises(ConfigError, match="mrl_dims"):
        load_config("perceiver", ["losses.mrl_dims=[64, 8192]"])
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="empty"):
        load_config(str(empty))
    broken = tmp_path / "broken.yaml"
    broken.write_text("losses: [1, 2\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: not valid YAML \(line"):
        load_config(str(broken))


def test_schema_lists_every_key():
    keys = all_keys()
    assert "vision_encoder.perceiver_latent_init" in keys and "dataset.synthetic.shared_scale" in keys
