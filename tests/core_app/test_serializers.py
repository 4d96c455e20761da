"""core_app.serializers.FieldsBuiltOnce: a serializer's fields built once per class, each
instance's its own and bound to it."""

import threading

from rest_framework import serializers

from core_app.serializers import FieldsBuiltOnce


class Inner(serializers.Serializer):
    value = serializers.IntegerField()


class Plain(serializers.Serializer):
    name = serializers.CharField()
    tags = serializers.ListField(child=serializers.CharField())
    inner = Inner()
    seen_by = serializers.SerializerMethodField()

    def get_seen_by(self, obj: dict) -> str:
        return self.context["who"]


class Built(FieldsBuiltOnce, Plain):
    """Plain's fields, built once."""


class MoreBuilt(Built):
    extra = serializers.IntegerField(default=1)


OBJ = {"name": "a", "tags": ["x", "y"], "inner": {"value": 3}, "extra": 7}


def test_the_data_is_what_drf_builds_field_by_field():
    assert Built(OBJ, context={"who": "me"}).data == Plain(OBJ, context={"who": "me"}).data


def test_the_class_fields_are_built_once(monkeypatch):
    calls = []
    original = serializers.Serializer.get_fields

    def counted(self):
        calls.append(type(self))
        return original(self)

    monkeypatch.setattr(serializers.Serializer, "get_fields", counted)
    monkeypatch.setattr(Built, "_fields_template", None)
    for _ in range(5):
        assert Built(OBJ, context={"who": "me"}).data["name"] == "a"

    assert calls.count(Built) == 1
    # The nested serializer is an instance of a class without the mixin: built each time.
    assert calls.count(Inner) == 5


def test_each_instance_has_its_own_fields_bound_to_it():
    first, second = Built(OBJ), Built(OBJ)

    for name in ("name", "tags", "inner", "seen_by"):
        assert first.fields[name] is not second.fields[name]
        assert first.fields[name].parent is first
        assert second.fields[name].parent is second
    # Fields that hold fields are copied whole: their inner fields are bound to the copy.
    assert first.fields["tags"].child is not second.fields["tags"].child
    assert first.fields["tags"].child.parent is first.fields["tags"]
    assert first.fields["inner"].fields["value"].parent is first.fields["inner"]


def test_a_subclass_builds_its_own_fields():
    assert "extra" in MoreBuilt(OBJ).fields
    assert "extra" not in Built(OBJ).fields
    assert MoreBuilt(OBJ, context={"who": "me"}).data["extra"] == 7


def test_instances_in_threads_each_read_their_own_context():
    results: dict[int, list[str]] = {}

    def serialize(n: int) -> None:
        results[n] = [Built(OBJ, context={"who": f"t{n}"}).data["seen_by"] for _ in range(200)]

    threads = [threading.Thread(target=serialize, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert results == {n: [f"t{n}"] * 200 for n in range(8)}


def test_validation_still_reports_each_fields_errors():
    bad = Built(data={"name": "", "tags": "no", "inner": {"value": "x"}})

    assert not bad.is_valid()
    assert set(bad.errors) == {"name", "tags", "inner"}
    assert set(bad.errors["inner"]) == {"value"}
    good = Built(data={"name": "n", "tags": ["t"], "inner": {"value": 2}})
    assert good.is_valid(), good.errors
    assert good.validated_data["inner"] == {"value": 2}
