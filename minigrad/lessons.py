"""The lessons from the command line: open them, list them, or write student copies for a class.

    python -m minigrad.lessons open                      # JupyterLab on the lessons folder
    python -m minigrad.lessons open --student [--dir D]  # student copies in D (default ~/minigrad-student), opened
    python -m minigrad.lessons list
    python -m minigrad.lessons student OUTDIR [NOTEBOOK ...] [--lessons-dir DIR]

(`--lessons-dir DIR` may also come before the subcommand.)

A student copy is the lesson with the source of every cell tagged `solution`
replaced by a stub, and the auto-check cells kept, so the student fills the
gap and the check says whether it is right. Outputs from the first solution
cell onwards are cleared, because they were produced by the solutions.

Check cells must not give the answer away, so a check compares against an
independent computation (gradcheck, autograd, a formula computed another way)
or, for a number or a choice that nothing else can check, against a digest:
`check_answer(answer, answer_digest(the_right_answer))` — the lesson stores
only the digest, printed once by its author. A backward rule the learner writes
in NumPy is checked by `mg.gradcheck(numpy_op(forward, backward), inputs)`.

Notebooks are read and written as plain JSON (nbformat 4), so this module
needs neither Jupyter nor matplotlib, and `import minigrad` never loads it.
"""
import argparse
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from .resources import lessons_dir

SOLUTION_TAG = "solution"
LESSON_METADATA = "minigrad"  # cell metadata of an exercise: {"wrong": "<a plausible wrong solution>"}
CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError(\"write your solution here, then run the check below\")\n"
MARKDOWN_STUB = "*Your answer here.*\n"
DEFAULT_LESSONS_DIR = lessons_dir()  # lessons/ of the checkout, or the copy a wheel carries
DEFAULT_STUDENT_DIR = Path.home() / "minigrad-student"
DIGEST_SALT = "minigrad-lessons:"


def _normalise(answer, digits):
    """One canonical text for an answer: numbers to `digits` significant digits, text lower-cased and trimmed,
    sequences element by element (so 0.70, 0.7 and 7e-1 give the same digest, and so do "B" and " b")."""
    if isinstance(answer, (list, tuple)):
        return "(" + ",".join(_normalise(a, digits) for a in answer) + ")"
    if isinstance(answer, str):
        return " ".join(answer.strip().lower().split())
    if isinstance(answer, bool) or answer is None:
        return repr(answer)
    try:
        number = float(answer)
    except (TypeError, ValueError):
        raise TypeError(f"answer must be a number, a string or a tuple of them, got {type(answer).__name__}") from None
    if number == 0:
        number = 0.0  # -0.0 and 0.0 are the same answer
    return f"{number:.{digits}g}"


def answer_digest(answer, digits=3):
    """A short SHA-256 digest of an answer (numbers rounded to `digits` significant digits): a check cell stores this
    instead of the answer, so a student copy does not reveal it."""
    return hashlib.sha256((DIGEST_SALT + _normalise(answer, digits)).encode()).hexdigest()[:16]


def check_answer(answer, digest, digits=3, hint=""):
    """Raise AssertionError unless `answer` has the stored digest; print 'correct' when it does."""
    if answer is NotImplemented or answer is Ellipsis:
        raise AssertionError("no answer yet: replace the ... with your answer")
    if answer_digest(answer, digits) != digest:
        message = f"{answer!r} is not right"
        if isinstance(answer, (int, float)) and not isinstance(answer, bool):
            message += f" (compared to {digits} significant digits)"
        raise AssertionError(message + (f". {hint}" if hint else ""))
    print("correct")


def lesson_paths(lessons_dir=DEFAULT_LESSONS_DIR):
    """The lesson notebooks `NN_name.ipynb` in `lessons_dir`, in course order."""
    lessons_dir = Path(lessons_dir)
    if not lessons_dir.is_dir():
        raise FileNotFoundError(f"lessons directory {lessons_dir} does not exist (pass --lessons-dir)")
    return sorted(lessons_dir.glob("[0-9][0-9]_*.ipynb"))


def _source(cell):
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _title(notebook):
    """The first Markdown heading of a notebook, without its '#'s."""
    for cell in notebook["cells"]:
        if cell["cell_type"] == "markdown":
            for line in _source(cell).splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return ""


def is_solution(cell):
    return SOLUTION_TAG in cell.get("metadata", {}).get("tags", [])


def planted_wrong_answer(cell):
    """The plausible wrong solution an exercise cell keeps in its metadata (its check must reject it), or None."""
    return cell.get("metadata", {}).get(LESSON_METADATA, {}).get("wrong")


def _clear_outputs(cell):
    if cell["cell_type"] == "code":
        cell["outputs"] = []
        cell["execution_count"] = None


def student_copy(notebook):
    """A new notebook dict: solution cells stubbed, outputs cleared from the first solution onwards."""
    if notebook.get("nbformat") != 4:
        raise ValueError(f"student copies need nbformat 4 notebooks, got nbformat {notebook.get('nbformat')}")
    copy = json.loads(json.dumps(notebook))
    after_solution = False
    for cell in copy["cells"]:
        if is_solution(cell):
            after_solution = True
            cell["source"] = CODE_STUB if cell["cell_type"] == "code" else MARKDOWN_STUB
            cell["metadata"].pop(LESSON_METADATA, None)  # the planted wrong answer is for the tests, not a hint
        if after_solution:
            _clear_outputs(cell)
    return copy


def write_student_copies(outdir, notebooks=None, lessons_dir=DEFAULT_LESSONS_DIR):
    """Write the student copy of each notebook (default: every lesson) into `outdir`; return the paths written."""
    sources = [Path(p) for p in notebooks] if notebooks else lesson_paths(lessons_dir)
    if not sources:
        raise FileNotFoundError(f"no lesson notebooks (NN_name.ipynb) in {lessons_dir}")
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise ValueError(f"OUTDIR {outdir} is an existing file; student copies go into a directory")
    for source in sources:
        if not source.is_file():
            raise FileNotFoundError(f"notebook {source} does not exist")
        if source.resolve().parent == outdir.resolve():
            raise ValueError(f"refusing to write the student copy of {source} over the lesson itself: "
                             f"choose an OUTDIR other than {outdir}")
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sources:
        notebook = read_notebook(source)
        target = outdir / source.name
        target.write_text(json.dumps(student_copy(notebook), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(target)
    return written


def read_notebook(path):
    """A notebook file as a dict; a file that is not notebook JSON raises ValueError naming it."""
    try:
        notebook = json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a notebook: it is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not a notebook: not valid JSON ({exc})") from None
    if not isinstance(notebook, dict) or not isinstance(notebook.get("cells"), list):
        raise ValueError(f"{path} is not a notebook: its JSON has no list of 'cells'")
    return notebook


def _list(args):
    for path in lesson_paths(args.lessons_dir):
        notebook = read_notebook(path)
        exercises = sum(is_solution(cell) for cell in notebook["cells"])
        print(f"{path.stem:28s} {_title(notebook)}  ({exercises} exercise solution cells)")


def jupyter_command(lessons_dir, extra_args=(), as_root=False):
    """The JupyterLab command that opens the lessons; as root (a container, a cloud VM) Jupyter needs
    --allow-root, or it refuses to start."""
    command = [sys.executable, "-m", "jupyterlab", str(lessons_dir)]
    if as_root:
        command.append("--allow-root")
    return command + list(extra_args)


def numpy_op(forward, backward, name="numpy_op"):
    """A minigrad function made of a NumPy forward and a hand-written NumPy backward, so that `mg.gradcheck` can
    check the backward rule a learner wrote:

        forward(*arrays) -> (out, cache)          arrays: the inputs' float64 data
        backward(grad_out, cache) -> grads        one gradient per input (a tuple, or one array for one input)

    The returned function takes Tensors (or arrays) and returns a Tensor whose backward calls `backward`.
    """
    from .tensor import Tensor  # here, not at the top: `import minigrad` must not load this module

    def op(*inputs):
        tensors = tuple(x if isinstance(x, Tensor) else Tensor(x) for x in inputs)
        out, cache = forward(*(t.data for t in tensors))

        def rule(grad):
            grads = backward(grad, cache)
            grads = (grads,) if len(tensors) == 1 and not isinstance(grads, (tuple, list)) else tuple(grads)
            if len(grads) != len(tensors):
                raise ValueError(f"{name}: backward returned {len(grads)} gradients for {len(tensors)} inputs")
            for k, (g, t) in enumerate(zip(grads, tensors)):
                if g is not None and np.shape(g) != t.shape:
                    raise ValueError(f"{name}: the gradient of input {k} has shape {np.shape(g)}, "
                                     f"but the input has shape {t.shape}")
            return grads

        return Tensor.from_op(np.asarray(out), tensors, rule, name)

    return op


def prepare_student_folder(folder, lessons_dir=DEFAULT_LESSONS_DIR):
    """Write the student copy of every lesson that `folder` does not hold yet (a copy already there keeps the
    student's work); return the paths written."""
    folder = Path(folder)
    if folder.resolve() == Path(lessons_dir).resolve():
        raise ValueError(f"refusing to write student copies into the lessons folder {lessons_dir}: choose another --dir")
    missing = [path for path in lesson_paths(lessons_dir) if not (folder / path.name).exists()]
    return write_student_copies(folder, missing, lessons_dir) if missing else []


def _open(args):
    if importlib.util.find_spec("jupyterlab") is None:
        raise FileNotFoundError('JupyterLab is not installed: run `pip install -e ".[lessons]"` first')
    folder = args.lessons_dir
    if args.student:
        folder = args.dir
        written = prepare_student_folder(folder, args.lessons_dir)
        print(f"student copies in {folder}: {len(written)} new" + (" (existing copies kept)" if not written else ""))
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    try:
        return subprocess.call(jupyter_command(folder, args.jupyter_args, as_root))
    except KeyboardInterrupt:
        return 0


def _student(args):
    for path in write_student_copies(args.outdir, args.notebooks, args.lessons_dir):
        print(f"wrote {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minigrad.lessons", description=__doc__.split("\n\n")[0])
    lessons_dir = argparse.ArgumentParser(add_help=False)  # --lessons-dir before or after the subcommand
    parser.add_argument("--lessons-dir", default=DEFAULT_LESSONS_DIR, type=Path,
                        help=f"where the lesson notebooks are (default: {DEFAULT_LESSONS_DIR})")
    lessons_dir.add_argument("--lessons-dir", default=argparse.SUPPRESS, type=Path,
                             help=f"where the lesson notebooks are (default: {DEFAULT_LESSONS_DIR})")
    commands = parser.add_subparsers(dest="command", required=True)
    opener = commands.add_parser("open", parents=[lessons_dir],
                                 help="open the lessons in JupyterLab (the main job); other options "
                                      "(e.g. --no-browser, --port 8890) go on to jupyter lab")
    opener.add_argument("--student", action="store_true",
                        help="open student copies (solutions stubbed) instead of the lessons; copies already in "
                             "the folder are kept, so your work is never overwritten")
    opener.add_argument("--dir", type=Path, default=DEFAULT_STUDENT_DIR,
                        help=f"folder for the student copies with --student (default: {DEFAULT_STUDENT_DIR})")
    opener.set_defaults(run=_open)
    commands.add_parser("list", parents=[lessons_dir],
                        help="list the lessons with their titles").set_defaults(run=_list)
    student = commands.add_parser("student", parents=[lessons_dir],
                                  help="write student copies (solution cells stubbed, checks kept)")
    student.add_argument("outdir", type=Path, help="directory for the student copies (created if missing)")
    student.add_argument("notebooks", nargs="*", type=Path, help="notebooks to copy (default: every lesson)")
    student.set_defaults(run=_student)
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "open":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.jupyter_args = extra
    try:
        return args.run(args) or 0
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
