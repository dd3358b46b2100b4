from pathlib import Path

import pytest

from ragkeep.config import ConfigError, load_settings


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "ragkeep.toml"
    p.write_text(text)
    return p


def test_sections_and_environment_overrides(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        """
[app]
port = 9000
[database]
url = "postgresql://db/ragkeep"
[database.maintenance]
vacuum_schedule = "0 3 * * *"
[ingestion]
chunk_size = 500
chunk_overlap = 50
""",
    )
    s = load_settings(
        p, environ={"RAGKEEP_PORT": "7400", "RAGKEEP_INGESTION__CHUNK_SIZE": "600", "RAGKEEP_HOME": str(tmp_path)}
    )
    assert s.app.port == 7400
    assert s.ingestion.chunk_size == 600
    assert s.database.maintenance.vacuum_schedule == "0 3 * * *"
    assert s.app.home == tmp_path
    assert s.pgdata == tmp_path / "pgdata"


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    p = write(tmp_path, "[database]\nurll = 'x'\n")
    with pytest.raises(ConfigError) as e:
        load_settings(p, environ={})
    assert "database.urll" in str(e.value) and str(p) in str(e.value) and "unknown key" in str(e.value)


def test_unknown_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="databse"):
        load_settings(write(tmp_path, "[databse]\nurl = 'x'\n"), environ={})


@pytest.mark.parametrize(
    "text, key",
    [
        ("[app]\nport = 70000\n", "app.port"),
        ("[database.maintenance]\nvacuum_schedule = 'every night'\n", "database.maintenance.vacuum_schedule"),
        ("[ingestion]\nchunk_size = 100\nchunk_overlap = 100\n", "ingestion"),
        ("[embedding]\nprovider = 'openai'\n", "embedding"),
        ("[embedding]\ndimensions = 512\n", "embedding"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(write(tmp_path, text), environ={})
    assert key in str(e.value)


def test_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(None, environ={"RAGKEEP_PORT": "not-a-port"})
    assert "app.port" in str(e.value) and "RAGKEEP_PORT" in str(e.value)


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[app\n"), environ={})
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_named_variables_read_from_files(tmp_path: Path) -> None:
    """Docker and Kubernetes secrets are files: ``<NAME>_FILE`` reads the value, one newline dropped."""
    key = tmp_path / "secret_key"
    key.write_text("s3cret-key\n")
    pw = tmp_path / "db_password"
    pw.write_text("pw with spaces\r\n")
    s = load_settings(environ={"RAGKEEP_SECRET_KEY_FILE": str(key), "RAGKEEP_DATABASE_PASSWORD_FILE": str(pw),
                               "RAGKEEP_DATABASE_URL": "postgresql://u@h/db"})
    assert s.auth.secret_key == "s3cret-key"
    assert s.database.password == "pw with spaces"
    assert "password='pw with spaces'" in (s.database.connection_url() or "")


def test_file_variables_refuse_a_missing_file_and_a_double_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="RAGKEEP_SECRET_KEY_FILE: cannot read"):
        load_settings(environ={"RAGKEEP_SECRET_KEY_FILE": str(tmp_path / "absent")})
    key = tmp_path / "k"
    key.write_text("x")
    with pytest.raises(ConfigError, match="both RAGKEEP_SECRET_KEY and RAGKEEP_SECRET_KEY_FILE"):
        load_settings(environ={"RAGKEEP_SECRET_KEY": "y", "RAGKEEP_SECRET_KEY_FILE": str(key)})
