"""Running arcli commands in tests and checking their error lines."""

from typer.testing import CliRunner

from arcli.cli import app


def run(*args, input=None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


def one_line_error(result, *fragments):
    """Exit code 1, one `arcli: error:` line on stderr holding every fragment, nothing on stdout."""
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("arcli: error: ")
    assert "Traceback" not in result.output
    assert result.stdout == ""
    for fragment in fragments:
        assert fragment in lines[0]
