"""The review API and web page (`fusionwatch api`): the last hop of the data path.

Quality-control reviewers read events (SQL, written by the monitor) and their narrated clips (files
under the media root, written by the summarizer), and write verdicts back. Verdicts feed the
feedback loop: `recalibration.recalibrate` raises per-asset thresholds after false alarms, and
`recalibration.labelled_windows` hands labelled time ranges to the next `fusionwatch train`.

`create_app(settings)` (services/api/app.py) builds the FastAPI application; `fusionwatch up` runs
it in a thread. Imported lazily so that the CLI's --help does not pay for FastAPI.
"""


def __getattr__(name: str):
    if name == "create_app":
        from services.api.app import create_app

        return create_app
    raise AttributeError(name)
