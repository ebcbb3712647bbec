"""probes.graph_leaves: trainable tensors on the loss's path in no registered module and no param group, read
from the autograd graph after backward."""

import torch
import torch.nn.functional as F
from torch import nn

from probes import attach
from probes.graph_leaves import GraphLeaves, graph_leaves


def _values(df, step=None):
    sub = df[df.probe == "graph_leaves"]
    if step is not None:
        sub = sub[sub.step == step]
    return {(t, m): v for t, m, v in zip(sub.target, sub.metric, sub.value)}


class ListTowers(nn.Module):
    """Two towers in a plain Python list (invisible to parameters()), a registered logit scale."""

    def __init__(self, registered: bool = False):
        super().__init__()
        towers = [nn.Linear(8, 4), nn.Linear(6, 4)]
        self.towers = nn.ModuleList(towers) if registered else towers
        self.logit_scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, x, t):
        a, b = F.normalize(self.towers[0](x), dim=-1), F.normalize(self.towers[1](t), dim=-1)
        return self.logit_scale.exp() * a @ b.t()


def _train(model, opt, steps=3, extra_opt=None, **observe):
    torch.manual_seed(0)
    with attach(model, opt, probes=[GraphLeaves()], strict=True) as session:
        for step in range(steps):
            z = model(torch.randn(8, 8), torch.randn(8, 6))
            loss = F.cross_entropy(z, torch.arange(8))
            opt.zero_grad()
            if extra_opt is not None:
                extra_opt.zero_grad()
            loss.backward()
            session.observe(step, **({"losses": {"clip": loss}, "logits": {"clip": z}} | observe))
            opt.step()
            if extra_opt is not None:
                extra_opt.step()
    return session.records


def test_towers_in_a_python_list_are_unregistered_and_never_move():
    model = ListTowers()
    records = _train(model, torch.optim.Adam(model.parameters(), lr=0.1))
    v = _values(records, step=0)
    assert v[("unregistered", "count")] == 4  # two weights, two biases; the logit scale is registered
    assert v[("unregistered", "numel")] == 8 * 4 + 4 + 6 * 4 + 4
    assert v[("in_groups", "numel")] == 1  # what the optimizer can step on the path: the logit scale
    listed = {t.split(":", 1)[1]: n for (t, m), n in v.items() if m == "unregistered_numel"}
    assert listed == {"4x8": 32, "4": 4, "4x6": 24}  # the two biases share a shape
    assert v[("unregistered", "truncated")] == 0 and v[("unregistered", "nodes")] > 4
    # walked once; the norm read on every step, and it stays put: nothing steps them
    assert set(records[records.metric == "count"].step) == {0}
    norm = records[records.metric == "norm"].sort_values("step").value.tolist()
    expected = torch.cat([p.detach().flatten() for m in model.towers for p in m.parameters()]).norm().item()
    assert len(norm) == 3 and all(abs(n - expected) < 1e-5 for n in norm)


def test_registered_towers_have_no_unregistered_leaves_and_no_norm():
    model = ListTowers(registered=True)
    records = _train(model, torch.optim.Adam(model.parameters(), lr=0.1))
    assert _values(records, step=0)[("unregistered", "count")] == 0
    assert records[records.metric.isin(["norm", "unregistered_numel"])].empty


def test_leaves_in_a_param_group_are_not_unregistered():
    """The optimizer holds the list's tensors (built from them explicitly): stepped, so not this fault."""
    model = ListTowers()
    params = [model.logit_scale] + [p for m in model.towers for p in m.parameters()]
    records = _train(model, torch.optim.SGD(params, lr=0.1))
    assert _values(records, step=0)[("unregistered", "count")] == 0


def test_leaves_stepped_by_a_second_optimizer_are_listed_and_their_norm_moves():
    model = ListTowers()
    second = torch.optim.SGD([p for m in model.towers for p in m.parameters()], lr=0.5)
    records = _train(model, torch.optim.Adam(model.parameters(), lr=0.1), extra_opt=second)
    assert _values(records, step=0)[("unregistered", "count")] == 4
    norm = records[records.metric == "norm"].sort_values("step").value
    assert abs(norm.iloc[-1] / norm.iloc[0] - 1) > 1e-3


def test_inputs_and_frozen_teacher_do_not_count():
    teacher = nn.Linear(6, 4).requires_grad_(False)  # outside the model, frozen: not a leaf that needs grad
    student = nn.Linear(8, 4)
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    with attach(student, opt, probes=[GraphLeaves()], strict=True) as session:
        x = torch.randn(8, 8)
        z = F.normalize(student(x), dim=-1) @ F.normalize(teacher(torch.randn(8, 6)), dim=-1).t()
        loss = F.cross_entropy(z, torch.arange(8))
        loss.backward()
        session.observe(0, losses={"clip": loss})
    assert _values(session.records)[("unregistered", "count")] == 0


def test_walk_after_backward_falls_back_to_logits_and_waits_for_a_graph():
    """A float loss has no graph: the logits are walked; with nothing to walk, the probe tries again next step."""
    model = ListTowers()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    with attach(model, opt, probes=[GraphLeaves()], strict=True) as session:
        for step in range(2):
            z = model(torch.randn(8, 8), torch.randn(8, 6))
            loss = F.cross_entropy(z, torch.arange(8))
            loss.backward()  # graph freed of its saved tensors; the nodes stay
            session.observe(step, losses={"clip": loss.item()}, logits={"clip": z} if step else {})
    v = _values(session.records)
    assert set(session.records[session.records.metric == "count"].step) == {1}
    assert v[("unregistered", "count")] == 4


def test_walk_is_bounded_and_visits_shared_nodes_once():
    w = nn.Parameter(torch.ones(3))
    y = w
    for _ in range(50):
        y = y * 1.01 + w  # a chain in which every node reaches the same leaf
    leaves, nodes, truncated = graph_leaves([y.sum().grad_fn])
    assert [id(v) for v in leaves] == [id(w)] and not truncated
    leaves, nodes, truncated = graph_leaves([y.sum().grad_fn], max_nodes=10)
    assert truncated and nodes == 10


def test_groups_changing_triggers_a_new_walk():
    model = ListTowers()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    with attach(model, opt, probes=[GraphLeaves()], strict=True) as session:
        for step in range(3):
            z = model(torch.randn(8, 8), torch.randn(8, 6))
            loss = F.cross_entropy(z, torch.arange(8))
            opt.zero_grad()
            loss.backward()
            session.observe(step, losses={"clip": loss})
            opt.step()
            if step == 0:  # the user fixes it mid-run
                opt.add_param_group({"params": [p for m in model.towers for p in m.parameters()]})
    counts = session.records[session.records.metric == "count"].set_index("step").value.to_dict()
    assert counts == {0: 4, 1: 0}


class LayerInForward(nn.Module):
    """A registered tower, and a projection built inside `forward`: a fresh random layer at every call."""

    def __init__(self):
        super().__init__()
        self.image = nn.Linear(8, 4)

    def forward(self, x, t):
        a = F.normalize(self.image(x), dim=-1)
        b = F.normalize(nn.Linear(6, 4)(t), dim=-1)
        return a @ b.t()


def test_a_layer_made_in_forward_is_found_again_after_its_leaves_were_freed_a_bounded_number_of_times():
    from probes.graph_leaves import MAX_REWALKS

    model = LayerInForward()
    records = _train(model, torch.optim.Adam(model.parameters(), lr=0.1), steps=6)
    recreated = records[records.metric == "recreated"].sort_values("step")
    assert recreated.step.tolist() == list(range(1, MAX_REWALKS + 1)) and (recreated.value == 1.0).all()
    assert set(records[records.metric == "count"].value) == {2.0}
    # towers in a list live across steps: found once, never freed, never walked again
    kept = _train(ListTowers(), torch.optim.Adam(ListTowers().parameters(), lr=0.1), steps=4)
    assert kept[kept.metric == "recreated"].empty
