"""factory-boy factories. Objects with side effects (grants, audit) go through services."""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from secretsapp.models import (
    Access,
    Membership,
    Organization,
    OrganizationGroup,
    Role,
    SecretKey,
)

PASSWORD = "Corr3ct-horse-battery"


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization

    name = factory.Sequence(lambda n: f"Organization {n}")


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.com")
    password = factory.django.Password(PASSWORD)


class MembershipFactory(factory.django.DjangoModelFactory):
    """A user in an organization; admins are staff, as the services make them."""

    class Meta:
        model = Membership

    user = factory.SubFactory(
        UserFactory,
        is_staff=factory.LazyAttribute(lambda user: user.factory_parent.role == Role.ADMIN),
    )
    organization = factory.SubFactory(OrganizationFactory)
    role = Role.MEMBER


class OrganizationGroupFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = OrganizationGroup
        skip_postgeneration_save = True

    organization = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"Group {n}")
    group = factory.LazyAttribute(
        lambda group: Group.objects.create(
            name=OrganizationGroup.auth_group_name(group.organization, group.name)
        )
    )

    @factory.post_generation
    def members(self, create: bool, extracted, **kwargs) -> None:
        if create and extracted:
            self.group.user_set.add(*extracted)


class SecretKeyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SecretKey

    organization = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"Key {n}")
    value = factory.Sequence(lambda n: f"secret-value-{n:06d}-do-not-leak")
    access = Access.TEAM
    created_by = None
