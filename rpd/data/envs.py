"""Transitional re-export: the environment code now lives in `rpd.data.tasks`,
`rpd.data.devices`, `rpd.data.views`, `rpd.data.env_state`, `rpd.data.seeding` and
`rpd.data.vec_envs`; import from those."""

from rpd.data.devices import (  # noqa: F401
    SIM_BACKENDS,
    check_sim_backend,
    cuda_available,
    limit_cpu_threads,
    resolve_device,
)
from rpd.data.env_state import EnvStateInfo, get_env_state, set_env_state  # noqa: F401
from rpd.data.seeding import (  # noqa: F401
    EPISODE_SEED_STEP,
    TRAIN_SEED_RANGE,
    SeededResets,
    episode_seeds,
)
from rpd.data.tasks import DEFAULT_CONTROL_MODE, TASKS, TaskSpec, get_task  # noqa: F401
from rpd.data.vec_envs import (  # noqa: F401
    EnvConfig,
    ObsMode,
    RewardMode,
    make_env,
    make_vec_env,
    render_states,
)
from rpd.data.views import (  # noqa: F401
    OBJECT_COLORS,
    PIXEL_OBS_MODES,
    STUDENT_KEYS,
    TASK_OBJECTS,
    CameraSpec,
    PixelObservation,
    pixel_observation_space,
    robot_proprio,
    teacher_image,
)
