"""Helpers for admin actions and buttons that call services, shared by the apps' admins:
bulk actions over the selected objects, and buttons on one object's page."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.views.decorators.http import require_POST

from core_app.errors import MobileSDError

_Handler = TypeVar("_Handler", bound=Callable[..., Any])


def service_error(exc: MobileSDError) -> str:
    """The readable message of a service's refusal (Conflict, NotFound, InvalidInput)."""
    if exc.fields:
        return " ".join(text for texts in exc.fields.values() for text in texts)
    return exc.message


def apply_to_each(
    model_admin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet[Any],
    service: Callable[..., Any],
    *,
    key: str,
    done: str,
) -> int:
    """Call `service(<key>=obj.pk)` for each selected object; a refusal (409, 404, 400) is
    reported for that object and the others go on. `done` is formatted with `count`."""
    count = 0
    obj: Model
    for obj in queryset:
        try:
            service(**{key: obj.pk})
            count += 1
        except MobileSDError as exc:
            model_admin.message_user(request, f"{obj.pk}: {service_error(exc)}", messages.WARNING)
    model_admin.message_user(request, done.format(count=count), messages.SUCCESS)
    return count


# --- buttons on an object's page ----------------------------------------------------------

# The attribute @object_action leaves on a ModelAdmin method.
_DECLARED = "object_action"


@dataclass(frozen=True)
class ObjectAction:
    """What @object_action declares: a button on an object's change page."""

    path: str
    label: str
    shown: Callable[[Any], bool]
    style: str
    refused: int


def _always(obj: Any) -> bool:
    return True


def object_action(
    *,
    path: str,
    label: str,
    shown: Callable[[Any], bool] = _always,
    style: str = "",
    refused: int = messages.WARNING,
) -> Callable[[_Handler], _Handler]:
    """Declare a ModelAdmin method as a button on its objects' pages (list the method's
    name in `object_actions`, as Django's `actions` lists @admin.action methods).

    The method is `(request, obj) -> the object to show next, or None for obj`; it calls a
    service and reports the answer with message_user. The button POSTs to
    `<object id>/<path>/` (URL name `<app>_<model>_<path with _ for ->`); it is shown when
    `shown(obj)`, with the extra CSS classes `style`; a MobileSDError the method raises is
    reported at level `refused`.
    """
    declared = ObjectAction(path=path, label=label, shown=shown, style=style, refused=refused)

    def declare(method: _Handler) -> _Handler:
        setattr(method, _DECLARED, declared)
        return method

    return declare


class ObjectActionsAdmin(admin.ModelAdmin):
    """A ModelAdmin whose change page has buttons for services (see @object_action): one
    POST-only, staff-only URL per button, and the page's context for the shared template
    admin/object_actions_change_form.html (core_app/templates/)."""

    change_form_template = "admin/object_actions_change_form.html"
    # Names of @object_action methods, in the order of their buttons.
    object_actions: Sequence[str] = ()
    # Show the Delete link among the buttons (for pages without a Save row to put it in).
    object_delete_link = False

    def get_object_actions(self) -> list[tuple[str, ObjectAction]]:
        """(method name, declaration) of each button, in order."""
        found = []
        for name in self.object_actions:
            declared = getattr(getattr(self, name, None), _DECLARED, None)
            if not isinstance(declared, ObjectAction):
                raise ImproperlyConfigured(
                    f"{type(self).__name__}.{name} is not an @object_action method."
                )
            found.append((name, declared))
        return found

    def _object_action_url_name(self, declared: ObjectAction) -> str:
        opts = self.opts
        return f"{opts.app_label}_{opts.model_name}_{declared.path.replace('-', '_')}"

    def get_urls(self) -> list[URLPattern]:
        buttons = [
            path(
                f"<path:object_id>/{declared.path}/",
                self.admin_site.admin_view(require_POST(self._object_action_view(name, declared))),
                name=self._object_action_url_name(declared),
            )
            for name, declared in self.get_object_actions()
        ]
        return [*buttons, *super().get_urls()]

    def _object_action_view(
        self, name: str, declared: ObjectAction
    ) -> Callable[[HttpRequest, str], HttpResponse]:
        """The view behind one button: run the method on the object, then show the object's
        page (or the one the method returned) with the method's messages."""

        def view(request: HttpRequest, object_id: str) -> HttpResponse:
            obj = self.get_object(request, unquote(object_id))
            if obj is None:
                raise Http404(f"No {self.opts.verbose_name} {object_id}.")
            if not self.has_change_permission(request, obj):
                raise PermissionDenied
            try:
                after = getattr(self, name)(request, obj)
            except MobileSDError as exc:
                self.message_user(request, service_error(exc), declared.refused)
                after = None
            return HttpResponseRedirect(self._change_url(obj if after is None else after))

        return view

    def _change_url(self, obj: Model) -> str:
        opts = obj._meta
        site = self.admin_site.name
        return reverse(
            f"{site}:{opts.app_label}_{opts.model_name}_change",
            args=[quote(obj.pk)],
            current_app=site,
        )

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> HttpResponse:
        site = self.admin_site.name
        buttons = []
        if change and obj is not None:
            buttons = [
                {
                    "path": declared.path,
                    "label": declared.label,
                    "style": declared.style,
                    "url": reverse(
                        f"{site}:{self._object_action_url_name(declared)}",
                        args=[quote(obj.pk)],
                        current_app=site,
                    ),
                }
                for _, declared in self.get_object_actions()
                if declared.shown(obj)
            ]
        context.update(object_actions=buttons, object_delete_link=self.object_delete_link)
        return super().render_change_form(request, context, add, change, form_url, obj)
