"""The README's ``start_worker`` example, copied verbatim into a test."""

from tqcore import App


def test_start_worker_example(tmp_path):
    url = f"sqlite:///{tmp_path / 'tq.db'}"
    app = App("readme", broker=url, backend=url, set_as_current=False)

    @app.task
    def add(x, y):
        return x + y

    # --- verbatim from the README ---
    from tqcore.testing import start_worker

    with start_worker(app, pool="threads", concurrency=2):
        assert add.delay(2, 2).get(timeout=10) == 4
    # ---
    app.close()
