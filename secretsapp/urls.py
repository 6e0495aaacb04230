from __future__ import annotations

from django.urls import path

from secretsapp import views

app_name = "secretsapp"

urlpatterns = [
    path("keys/", views.key_page, name="keys"),
    path("keys/picker/", views.key_picker, name="picker"),
    path("keys/names/", views.key_names, name="names"),
    path("keys/new/", views.key_create, name="create"),
    path("keys/manage/", views.key_manage, name="manage"),
    path("keys/<uuid:secret_id>/", views.key_detail, name="detail"),
    path("keys/<uuid:secret_id>/rename/", views.key_rename, name="rename"),
    path("keys/<uuid:secret_id>/value/", views.key_update_value, name="value"),
    path("keys/<uuid:secret_id>/access/", views.key_access, name="access"),
    path("keys/<uuid:secret_id>/delete/", views.key_delete, name="delete"),
    path("audit/", views.audit_log, name="audit"),
]
