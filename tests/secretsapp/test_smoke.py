from secretsapp.models import SecretKey


def test_personas_build(personas):
    assert SecretKey.objects.for_user(personas.member_use).count() == 2
