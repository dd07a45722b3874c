"""What a job says when the client's bytes need a module its image does not have.

The task's error stays a ``ModuleNotFoundError`` (a built-in type, so any client can unpickle it, with ``.name``
kept); only its message grows to say whether to ship the module with the task or to add it to the image.
"""

from __future__ import annotations

from scaler_aws_batch.local_code import LocalCodeSerializer

IMAGE_HINT = (
    "add it to the job image: CDK context requirements_file for Python packages, system_packages for Debian "
    "packages (see docs/deploy.md)"
)
COMPILED_HINT = "Compiled extension modules (.so, .pyd) cannot ship with a task: they must be installed in the image."
SHIP_HINT = (
    "ship it with the task: create the client with `from scaler_aws_batch import Client` instead of Scaler's, or "
    "pass serializer=LocalCodeSerializer() (`from scaler_aws_batch import LocalCodeSerializer`) to Scaler's Client"
)


def missing_module_error(exc: ModuleNotFoundError, serializer: object) -> ModuleNotFoundError:
    """The error for a task whose function or arguments refer to a module the image lacks."""
    name = exc.name or str(exc)
    top = name.partition(".")[0]
    if isinstance(serializer, LocalCodeSerializer):
        compiled = [module for module in serializer.compiled_modules if module.partition(".")[0] == top]
        if compiled:
            message = (
                f"No module named {name!r} in the job image: the client's LocalCodeSerializer found compiled "
                f"extension modules in its directories, which cannot ship with a task: {', '.join(compiled)}; "
                f"{IMAGE_HINT}"
            )
        else:
            message = (
                f"No module named {name!r} in the job image, and the client's LocalCodeSerializer did not ship it: "
                f"it ships only modules imported from {', '.join(serializer.directories) or 'no directory'} (not "
                f"from site-packages or the standard library). If {top!r} is the client's own code in another "
                f"directory, name that directory: LocalCodeSerializer(directories=[...]). If it is an installed "
                f"package, {IMAGE_HINT}. {COMPILED_HINT}"
            )
    else:
        message = (
            f"No module named {name!r} in the job image: the task's function or arguments refer to it. If {top!r} "
            f"is the client's own code (a module beside the client script), {SHIP_HINT}. If it is an installed "
            f"package, {IMAGE_HINT}. {COMPILED_HINT}"
        )
    return ModuleNotFoundError(message, name=exc.name, path=exc.path)


def serializer_module_message(exc: ModuleNotFoundError) -> str:
    """The PayloadError text when the client's serializer object itself cannot load."""
    name = exc.name or str(exc)
    message = (
        f"cannot load the client's serializer: the job image has no module {name!r}, which the serializer's class "
        f"comes from; the job image must have it: {IMAGE_HINT}"
    )
    if name.partition(".")[0] == "scaler":
        message += (
            ". Scaler's default serializer is in opengris-scaler: install opengris-scaler in the image, or create "
            "the client with `from scaler_aws_batch import Client`, whose serializer loads without Scaler"
        )
    return message
