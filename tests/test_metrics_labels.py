"""The label values of ``hlbook_info_requests_total`` come from the client's info ``type``:
both the series and what the server remembers to label them stay bounded."""

from hlbook.metrics import _MAX_KINDS, Metrics


def test_client_chosen_info_types_do_not_grow_the_server() -> None:
    metrics = Metrics(lambda: {})
    metrics.observe_http("l2Book", 200)
    for i in range(3 * _MAX_KINDS):
        metrics.observe_http(f"made-up-{i}", 422)
    # Every new string past the limit is counted as "other", and nothing is kept for it.
    assert len(metrics._kinds) == _MAX_KINDS
    labels = set(metrics.info_requests._metrics)
    assert len(labels) == _MAX_KINDS + 1  # the remembered types, and "other"
    assert ("other", "422") in labels
    assert metrics.info_requests.labels("other", "422")._value.get() == 2 * _MAX_KINDS + 1
    # A type seen before the limit keeps its own label.
    metrics.observe_http("l2Book", 200)
    assert metrics.info_requests.labels("l2Book", "200")._value.get() == 2
