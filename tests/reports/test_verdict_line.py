"""reports.markdown.verdict_line: the headline of a run, with and without a chance level to read the loss by."""

from reports.markdown import verdict_line


def test_verdict_line_reads_the_loss_against_chance_when_there_is_one():
    run = {"name": "r", "verdict": {"label": "learned"}, "final_loss": {"loss_clip": 1.0}, "chance_loss": 4.0}
    line = verdict_line(run)
    assert line.startswith("**r**: learned") and "vs ln(B) = 4" in line and "(0.25 x chance)" in line


def test_verdict_line_without_a_batch_size_says_so_instead_of_failing():
    run = {"name": "r", "verdict": {"label": "learned"}, "final_loss": {"loss_clip": 1.0}, "chance_loss": None}
    assert "no batch size given: ln(B) unknown" in verdict_line(run)
