from ioc.topics import CATALOGUE, spec, topic_name


def test_names_are_namespaced_and_unique():
    names = [t.name("abc") for t in CATALOGUE]
    assert len(set(names)) == len(names)
    assert all(n.startswith("abc.") for n in names)
    assert topic_name("ioc", "wall.tiles") == "ioc.wall.tiles"


def test_tiles_topic_is_compacted():
    assert spec("wall.tiles").cleanup_policy == "compact"
    assert spec("wall.tiles").configs()["cleanup.policy"] == "compact"
    assert "retention.ms" not in spec("wall.tiles").configs()


def test_unknown_suffix_names_known_ones():
    try:
        spec("nope")
    except KeyError as exc:
        assert "wall.tiles" in str(exc)
    else:
        raise AssertionError("expected KeyError")
