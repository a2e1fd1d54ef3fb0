"""Apache Airflow on the stateless tier: the offline install (issue 7, first part).

The controller builds the wheelhouse (:mod:`plinth.wheelhouse`); each Airflow host
receives it as one tar and installs it into a virtualenv named after the wheelhouse's
content hash, ``/opt/airflow/venv-<tag>``, with ``pip install --no-index``. ``current``
points at the venv in use. A new version or extra builds a new venv beside the old one,
so what runs keeps running until the units are switched; the same wheelhouse on a second
run installs nothing (the venv's marker holds the hash it was built from).

The services (``components.airflow.services``, off by default) are the second part:
``airflow.cfg`` rendered from the model, the secrets that must match on every host in a
root:airflow 0640 environment file, the Celery configuration module (SASL EXTERNAL), the
DAGs, one systemd unit per component the host's roles name, ``airflow db migrate`` from
one host of the active site when ``airflow db check-migrations`` says it is needed, and
the units running in the active datacenter only (installed, stopped and disabled in the
others). Proven on both labs, which turn the services on (docs/components/airflow.md).
A changed configuration or venv rolls the units host by host behind live gates
(:func:`roll_steps`, :func:`rolled`: workers drained first, ``airflow jobs check``).

The package, by concern:

* :mod:`.install`: the ``airflow`` user, the wheelhouse venv (``current`` → in use);
* :mod:`.settings`: the host's slice of the model, the paths on the host, the secrets;
* :mod:`.render`: ``airflow.cfg``, the environment and secrets files, units, wrapper (pure);
* :mod:`.services`: one host's services, the migration, the units, the roll's trigger;
* :mod:`.decide`: the roll's next step from what was read on the host (pure);
* :mod:`.roll`: the roll's executor, which only performs those steps.
"""

from operations.airflow.decide import (
    JOB_TYPES,
    JOB_WAIT_SECONDS,
    JOBS_STARTED_SINCE,
    RollStep,
    alive_jobs,
    next_step,
    roll_refusal,
    roll_steps,
)
from operations.airflow.install import (
    HOME,
    PREFIX,
    USER,
    AirflowInstall,
    airflow_installed,
    airflow_user,
)
from operations.airflow.render import (
    render_celery_module,
    render_config,
    render_environment,
    render_secrets,
    render_unit,
    render_wrapper,
)
from operations.airflow.roll import rolled
from operations.airflow.services import airflow_services, celery_importable, database_migrated
from operations.airflow.settings import (
    ADMIN_PASSWORD_SECRET,
    AIRFLOW_BIN,
    CELERY_MODULE,
    CONFIG,
    CONFIG_HOME,
    DAG_ROLES,
    DAGS_FOLDER,
    ENV_FILE,
    GRID_CONNECTION,
    LOG_FOLDER,
    MANAGED_HEADER_TEXT,
    PASSWORDS_FILE,
    PYTHON_BIN,
    REPO_DAGS,
    SECRET_ENV_NAMES,
    SECRETS_ENV,
    WORKER_STOP_SECONDS,
    WRAPPER,
    AirflowConfig,
    airflow_config,
    read_secrets,
)
from operations.wheelhouse import MARKER

# Every public name operations.airflow had before it became a package (deploy.py, bench/,
# the tests import from here), and the roll's decision.
__all__ = [
    "ADMIN_PASSWORD_SECRET",
    "AIRFLOW_BIN",
    "CELERY_MODULE",
    "CONFIG",
    "CONFIG_HOME",
    "DAGS_FOLDER",
    "DAG_ROLES",
    "ENV_FILE",
    "GRID_CONNECTION",
    "HOME",
    "JOBS_STARTED_SINCE",
    "JOB_TYPES",
    "JOB_WAIT_SECONDS",
    "LOG_FOLDER",
    "MANAGED_HEADER_TEXT",
    "MARKER",
    "PASSWORDS_FILE",
    "PREFIX",
    "PYTHON_BIN",
    "REPO_DAGS",
    "SECRETS_ENV",
    "SECRET_ENV_NAMES",
    "USER",
    "WORKER_STOP_SECONDS",
    "WRAPPER",
    "AirflowConfig",
    "AirflowInstall",
    "RollStep",
    "airflow_config",
    "airflow_installed",
    "airflow_services",
    "airflow_user",
    "alive_jobs",
    "celery_importable",
    "database_migrated",
    "next_step",
    "read_secrets",
    "render_celery_module",
    "render_config",
    "render_environment",
    "render_secrets",
    "render_unit",
    "render_wrapper",
    "roll_refusal",
    "roll_steps",
    "rolled",
]
