from __future__ import annotations

from django.urls import path

from workflows import views

app_name = "workflows"

urlpatterns = [
    path("", views.workflow_list, name="list"),
    path("new/", views.workflow_create, name="create"),
    path("<int:workflow_id>/", views.workflow_edit, name="edit"),
    path("<int:workflow_id>/settings/", views.workflow_settings, name="settings"),
    path("<int:workflow_id>/delete/", views.workflow_delete, name="delete"),
    path("<int:workflow_id>/actions/new/", views.action_add, name="action_add"),
    path("<int:workflow_id>/actions/<int:action_id>/", views.action_save, name="action_save"),
    path("<int:workflow_id>/actions/<int:action_id>/move/", views.action_move, name="action_move"),
    path(
        "<int:workflow_id>/actions/<int:action_id>/delete/",
        views.action_delete,
        name="action_delete",
    ),
    path("<int:workflow_id>/webhook/", views.webhook_save, name="webhook"),
    path("<int:workflow_id>/webhook/remove/", views.webhook_remove, name="webhook_remove"),
    path("<int:workflow_id>/run/", views.workflow_run, name="run_workflow"),
    path("<int:workflow_id>/runs/", views.run_list, name="runs"),
    path("runs/<uuid:run_id>/", views.run_detail, name="run"),
    path("runs/<uuid:run_id>/live/", views.run_live, name="run_live"),
    path("runs/<uuid:run_id>/cancel/", views.run_cancel, name="run_cancel"),
]
