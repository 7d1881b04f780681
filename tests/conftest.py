import pathlib

REPO = pathlib.Path(__file__).resolve().parent.parent
