import json

from kubeprober.interning import SHORT, interned

DOC = '{"status": {"state": "Online", "message": "%s", "checks": [{"status": "PASS"}, "PASS"]}}'


def test_equal_strings_of_separately_decoded_documents_become_one() -> None:
    long = "x" * (SHORT + 1)
    a, b = (interned(json.loads(DOC % long)) for _ in range(2))
    assert a == b == json.loads(DOC % long)  # nothing said changes
    (key_a,), (key_b,) = a.keys(), b.keys()
    assert key_a is key_b
    assert a["status"]["state"] is b["status"]["state"]
    assert a["status"]["checks"][0]["status"] is b["status"]["checks"][1]
    assert a["status"]["message"] is not b["status"]["message"]  # long: rarely repeats


def test_goes_deeper_than_the_interpreter_recurses() -> None:
    deep: list[object] = ["PASS"]
    for _ in range(20_000):
        deep = [{"level": deep}]
    assert interned(deep) is deep
