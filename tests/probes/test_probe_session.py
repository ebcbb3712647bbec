"""Session scoping, memory, presets and an unseen model (MultiheadAttention + SDPA)."""

import gc
import pathlib
import re
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import probes
from probes import PRESETS, ProbeSession, attach
from probes.batch_mixing import ARM_AT


class SelfAttention(nn.Module):
    """A block the project has never seen: fused qkv + F.scaled_dot_product_attention."""

    def __init__(self, d, heads):
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.heads = heads

    def forward(self, x):  # (B, T, D)
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, T, D))


class TinyTower(nn.Module):
    def __init__(self, d=16, heads=4, n_queries=4):
        super().__init__()
        self.stem = nn.Linear(8, d)
        self.blocks = nn.ModuleList([SelfAttention(d, heads) for _ in range(2)])
        self.query_tokens = nn.Parameter(torch.randn(n_queries, d) * 0.02)
        self.ln_q = nn.LayerNorm(d)
        self.pool = nn.MultiheadAttention(d, heads, batch_first=True)
        self.text = nn.Linear(12, d)

    def forward(self, tokens, text):  # (B, T, 8), (B, 12)
        x = self.stem(tokens)
        for block in self.blocks:
            x = x + block(x)
        q = self.ln_q(self.query_tokens).unsqueeze(0).expand(x.shape[0], -1, -1)
        pooled, _ = self.pool(q, x, x, need_weights=False)
        return pooled.mean(1), self.text(text)


def _train(model, session, steps=2, opt=None, fail_at=None):
    torch.manual_seed(1)
    opt = opt or torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step in range(steps):
        tokens, text = torch.randn(6, 10, 8), torch.randn(6, 12)
        img, txt = model(tokens, text)
        logits = F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T * 10
        loss = F.cross_entropy(logits, torch.arange(6))
        loss.backward()
        if step == fail_at:
            raise RuntimeError("boom")
        session.observe(
            step,
            losses={"loss_clip": loss, "total": loss},
            weights={"loss_clip": 1.0},
            embeddings={"image": img, "text": txt, "input": tokens.mean(1)},
            logits={"image_to_text": logits},
            batch_size=6,
        )
        opt.step()
        opt.zero_grad()
    return opt


def test_unseen_model_gets_entropy_gradient_and_collapse_records():
    model = TinyTower()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with attach(model, optimizer=opt, probes="all", outputs={"stem": "stem"}, strict=True) as session:
        _train(model, session, opt=opt)
    df = session.records
    assert list(df.columns) == ["step", "probe", "target", "metric", "value"]
    assert df.step.dtype == "int64" and df.value.dtype == "float64"
    ent = df[(df.probe == "softmax_entropy") & (df.metric == "entropy_mean")]
    targets = set(ent.target)
    assert {"blocks.0", "blocks.1", "pool", "pool.head3", "logits.image_to_text", "logits.text_to_image"} <= targets
    assert ent.value.between(0, 1 + 1e-6).all()
    assert set(df[df.probe == "gradient_flow"].metric) >= {"grad_norm", "update_to_param", "zero_grad_frac"}
    assert "blocks.1" in set(df[df.probe == "gradient_flow.layer"].target)
    assert {"image", "text", "input", "image~text", "stem"} <= set(df[df.probe == "collapse"].target)
    assert set(df[df.probe == "latent_stats"].target) >= {"query_tokens", "query_tokens->ln_q"}
    assert session.errors == []


def _hook_free(model, opt):
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks, m
        assert not m._backward_pre_hooks and not m._forward_hooks_with_kwargs and not m._forward_hooks_always_called
    if opt is not None:
        assert not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks


def test_hooks_removed_after_exception():
    model = TinyTower()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    original = F.scaled_dot_product_attention
    with pytest.raises(RuntimeError, match="boom"):
        with attach(model, optimizer=opt, probes="all", outputs={"stem": "stem"}, strict=True) as session:
            assert any(m._forward_hooks for m in model.modules())
            assert opt._optimizer_step_post_hooks
            _train(model, session, steps=3, opt=opt, fail_at=1)
    _hook_free(model, opt)
    assert F.scaled_dot_product_attention is original
    assert torch.nn.functional.scaled_dot_product_attention is original
    assert not session.is_open
    assert set(session.records.step) == {0}  # what was recorded before the error is kept


class FailingInside(nn.Module):
    """Raises from inside its forward, after a softmax, while the forward scope is open."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.seen_modes = []

    def forward(self, x):
        self.proj(x).softmax(-1)
        self.seen_modes.append(len(torch.overrides._get_current_function_mode_stack()))
        raise RuntimeError("boom inside forward")


def test_mode_and_global_hooks_are_gone_after_an_exception_inside_forward():
    from torch.nn.modules import module as module_mod

    model = FailingInside()
    global_hooks = len(module_mod._global_forward_pre_hooks)
    with pytest.raises(RuntimeError, match="boom inside forward"):
        with attach(model, probes="all", strict=True):
            model(torch.randn(2, 8))
    assert model.seen_modes == [1]  # the softmax mode was active inside the forward (step 0 is due)
    assert not torch.overrides._get_current_function_mode_stack()
    assert len(module_mod._global_forward_pre_hooks) == global_hooks
    _hook_free(model, None)
    # the exception left the scope open at depth 1: a later plain forward must not open anything
    with pytest.raises(RuntimeError):
        model(torch.randn(2, 8))
    assert model.seen_modes[-1] == 0


def test_session_keeps_no_activation_alive():
    model = TinyTower()
    refs = []
    grab = lambda m, a, out: refs.append(weakref.ref(out[0] if isinstance(out, tuple) else out))  # noqa: E731
    handles = [model.blocks[0].qkv.register_forward_hook(grab), model.pool.register_forward_hook(grab)]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with attach(model, optimizer=opt, probes="all", expensive_every=1, outputs={"stem": "stem"},
                strict=True) as session:
        tokens, text = torch.randn(6, 10, 8), torch.randn(6, 12)
        img, txt = model(tokens, text)
        refs += [weakref.ref(img), weakref.ref(txt)]
        loss = (img @ txt.T).logsumexp(1).mean()
        loss.backward()
        session.observe(0, losses={"loss_clip": loss}, embeddings={"image": img, "text": txt},
                        logits={"image_to_text": img @ txt.T})
        opt.step()
        del img, txt, loss
        gc.collect()
        assert len(refs) == 4 and all(r() is None for r in refs)
    for h in handles:
        h.remove()
    stored = [v for v in vars(session).values() if isinstance(v, torch.Tensor)]
    assert not stored
    assert all(isinstance(v, float) for v in session.buffer._cols["value"])


def _user_hook(module, args, output):  # the user's own hook: pickled with the model, by reference
    return None


def _hook_tables(model):
    return {name: (m._forward_hooks, list(m._forward_hooks), m._forward_pre_hooks, list(m._forward_pre_hooks),
                   dict(m._forward_hooks_with_kwargs), dict(m._forward_pre_hooks_with_kwargs))
            for name, m in model.named_modules()}


def test_a_watched_model_saves_pickles_and_copies_without_the_session():
    """`torch.save(model)` of the whole model while watched (a checkpoint routine written that way): the file
    holds the user's hooks and none of ours (it loads without this package), and the watch's hooks are back in
    place, same tables, ids and order; `pickle` and `copy.deepcopy` (an EMA twin) give inert hooks."""
    import copy
    import io
    import pickle

    from probes._hooks import OwnHook

    model = TinyTower()
    model.pool.register_forward_hook(_user_hook)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with attach(model, optimizer=opt, probes="all", expensive_every=1, outputs={"stem": "stem"},
                strict=True) as session:
        _train(model, session, opt=opt)
        before = _hook_tables(model)
        assert sum(isinstance(h, OwnHook) for m in model.modules() for h in m._forward_hooks.values()) >= 3
        buf = io.BytesIO()
        torch.save(model, buf)
        saved = buf.getvalue()
        after = _hook_tables(model)
        assert all(a[0] is b[0] and a[2] is b[2] for a, b in zip(before.values(), after.values()))
        assert [(a[1], a[3], a[4], a[5]) for a in after.values()] == [(b[1], b[3], b[4], b[5])
                                                                     for b in before.values()]
        twin = copy.deepcopy(model)
        pickled = pickle.loads(pickle.dumps(model))
        tokens, text = torch.randn(3, 10, 8), torch.randn(3, 12)
        with torch.no_grad():
            want = model(tokens, text)
        _train(model, session, steps=1, opt=opt)  # still watched after all that
        assert session.errors == []
    assert b"probes" not in saved and b"diagnose" not in saved
    loaded = torch.load(io.BytesIO(saved), weights_only=False)
    assert list(loaded.pool._forward_hooks.values()) == [_user_hook]
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in loaded.modules() if m is not loaded.pool)
    with torch.no_grad():
        for other in (loaded, twin, pickled):
            assert all(torch.equal(a, b) for a, b in zip(other(tokens, text), want))
    for other in (twin, pickled):
        ours = [h for m in other.modules() for h in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())
                if isinstance(h, OwnHook)]
        assert ours and all(h.fn is None for h in ours)


def test_torch_save_is_restored_whatever_order_the_watches_close_in():
    """One wrapper for the process, counted: the first watch to close leaves it for the other, the last one gives
    torch.save back (a fresh registry here: a watch another test left open holds the process-wide one)."""
    import io

    from probes._hooks import _Saving

    saving, a, b = _Saving(), TinyTower(), TinyTower()
    with attach(b, probes="all", expensive_every=1, strict=True):  # b holds hooks of this package
        original = torch.save
        drop_a, drop_b = saving.register(a), saving.register(b)
        drop_a()  # the first one closes first: b is still watched, its hooks still left out of a save
        assert torch.save is not original
        buf = io.BytesIO()
        torch.save(b, buf)
        assert b"probes" not in buf.getvalue()
        drop_b()
        assert torch.save is original


def test_presets_and_schedule():
    assert PRESETS["cheap"] == ("gradient_flow", "loss_split", "optimizer", "contrastive", "batch_mixing",
                                "pairs_first", "graph_leaves", "batch_drift")
    assert set(PRESETS["all"]) == {"latent_stats", "gradient_flow", "softmax_entropy", "loss_split", "collapse",
                                   "optimizer", "contrastive", "batch_mixing", "pairs_first", "graph_leaves",
                                   "batch_drift", "forward_weights"}
    model = TinyTower()
    with attach(model, probes="cheap", strict=True) as session:
        # cheap: no forward hooks, except batch_mixing's pre-hooks during the forwards after observations 0, 2, 10
        assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
        _train(model, session)
        assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert set(session.records.probe) <= {"gradient_flow", "gradient_flow.module", "gradient_flow.layer",
                                          "gradient_flow.model", "loss_split",
                                            "optimizer", "contrastive", "batch_mixing", "pairs_first",
                                            "graph_leaves", "batch_drift"}
    model = TinyTower()
    with attach(model, probes="all", every=2, expensive_every=3, strict=True) as session:
        _train(model, session, steps=5)
    df = session.records
    assert sorted(set(df[df.metric == "grad_norm"].step)) == [0, 2, 3, 4]
    assert sorted(set(df[df.metric == "effective_rank"].step)) == [0, 3]
    sdpa = df[(df.target == "blocks.0") & (df.metric == "entropy_mean")]
    assert sorted(sdpa.step) == [0, 3]
    with pytest.raises(ValueError):
        ProbeSession(model, probes="fast")


def test_eval_forward_under_no_grad_is_ignored():
    model = TinyTower()
    with attach(model, probes=["softmax_entropy"], expensive_every=1, strict=True) as session:
        with torch.no_grad():
            model(torch.randn(2, 10, 8), torch.randn(2, 12))
        session.observe(0)
    assert session.records.empty


def test_probe_errors_are_counted_not_raised():
    class Broken(probes.Probe):
        name = "broken"

        def observe(self, session, obs):
            raise ValueError("bad probe")

    with attach(nn.Linear(2, 2), probes=[Broken(), "loss_split"]) as session:
        session.observe(0, losses={"a": 1.0})
        session.observe(1, losses={"a": 1.0})
    df = session.records
    assert len(session.errors) == 2
    errs = df[(df.probe == "session") & (df.metric == "errors_count")]
    assert list(errs.step) == [0, 1] and set(errs.target) == {"broken"}
    assert (df[(df.probe == "loss_split") & (df.metric == "value")].value == 1.0).all()


def test_probes_never_import_model_or_report_code():
    src = pathlib.Path(probes.__file__).parent
    pattern = re.compile(r"^\s*(from|import)\s+(reference_models|diagnose|reports)\b", re.M)
    for path in src.glob("*.py"):
        text = path.read_text()
        assert not pattern.search(text), path
        assert not re.search(r"^\s*print\(", text, re.M), path


class _HostReads(torch.overrides.TorchFunctionMode):
    """Counts the calls that copy a tensor's values to the host (each is a device sync on a GPU)."""

    READS = {"item", "tolist", "__float__", "__int__", "__bool__", "numpy", "cpu"}

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.READS:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


BATCH_MIXING_STEPS = tuple(i + 1 for i in ARM_AT)


def test_one_host_transfer_per_cheap_step():
    """Every probe scalar of a step (losses, extras, gradient and update norms, collapse, logits
    entropy, the hooks' values) reaches the host in one `tolist`: no `.item()` per metric. Steps 1-48 get
    the full gradient measurement, step 49 the grad norms alone (`probes.schedule.FullSchedule`)."""
    model = TinyTower()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with attach(model, optimizer=opt, probes="all", expensive_every=100, strict=True) as session:
        for step in range(50):
            tokens, text = torch.randn(6, 10, 8), torch.randn(6, 12)
            img, txt = model(tokens, text)
            logits = F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T * 10
            loss = F.cross_entropy(logits, torch.arange(6))
            loss.backward()
            reads = _HostReads()
            with reads:
                session.observe(step, losses={"loss_clip": loss, "total": loss}, weights={"loss_clip": 1.0},
                                embeddings={"image": img, "text": txt}, logits={"image_to_text": logits},
                                batch_size=6, extras={"logit_scale": torch.tensor(10.0)})
            # step 0 is expensive (spectra, unique rows); later steps are cheap, except the three on which
            # batch_mixing recomputes the forward on half batches (a host read per module tested)
            if step > 0 and step not in BATCH_MIXING_STEPS:
                assert reads.calls == ["tolist"], reads.calls
            opt.step()
            opt.zero_grad()
    recs = session.records
    assert {"gradient_flow", "loss_split", "collapse", "softmax_entropy"} <= set(recs["probe"])
    assert len(recs[(recs["metric"] == "update_to_param") & (recs["step"] == 1)])  # flushed with step 2
    assert session.steps["full"] == 49 and not len(recs[(recs["metric"] == "param_norm") & (recs["step"] == 49)])
