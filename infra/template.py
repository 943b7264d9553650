"""template.yaml, read the way CloudFormation reads it: the SAM transform applied offline, then the
parts the local stack needs — what moto can create, and what the emulator must play itself
(functions, their triggers, the public API). Nothing here is a second list of resources."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from samtranslator.translator.managed_policy_translator import ManagedPolicyLoader
from samtranslator.translator.transform import transform

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"

# Resource types the emulator plays in-process instead of asking moto for them: moto cannot run
# Lambda code without Docker and fails on API Gateway v2 in CloudFormation.
EMULATED_PREFIXES = ("AWS::Lambda::", "AWS::ApiGatewayV2::", "AWS::Events::", "AWS::Scheduler::")


class _Loader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags (!Ref, !GetAtt, !Sub, ...)."""


def _construct_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    if suffix == "Condition":
        return {"Condition": value}
    return {f"Fn::{suffix}": value}


_Loader.add_multi_constructor("!", _construct_tag)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    """The SAM template as a dict, short-form tags expanded."""
    with path.open() as handle:
        loaded: dict[str, Any] = yaml.load(handle, Loader=_Loader)
    return loaded


class _NoManagedPolicies(ManagedPolicyLoader):
    """Offline: SAM asks IAM for managed policy ARNs only for names it does not know."""

    def __init__(self) -> None:
        pass

    def load(self) -> dict[str, str]:
        return {}


@dataclass(slots=True)
class Function:
    """A function as the template declares it: where its code is and how it is called."""

    logical_id: str
    code_dir: Path
    handler: str
    timeout: int
    memory_mb: int
    environment: dict[str, Any]
    # Its role's inline policy statements (intrinsics unresolved) and managed policy ARNs.
    statements: list[dict[str, Any]] = field(default_factory=list)
    managed_policies: list[str] = field(default_factory=list)


@dataclass(slots=True)
class SqsTrigger:
    """An SQS event source mapping: queue → function, batch size and batching window, partial
    failure reporting."""

    function: str
    queue_arn: Any  # an intrinsic, resolved by the stack
    batch_size: int
    report_failures: bool
    batching_window: float = 0.0  # MaximumBatchingWindowInSeconds


@dataclass(slots=True)
class Transformed:
    """The template after the SAM transform, split into moto's part and the emulator's part."""

    resources: dict[str, Any]
    parameters: dict[str, str]
    conditions: dict[str, bool]
    functions: dict[str, Function] = field(default_factory=dict)
    sqs_triggers: list[SqsTrigger] = field(default_factory=list)
    schedules: dict[str, str] = field(default_factory=dict)  # function → rate expression
    api_function: str | None = None  # the function behind the HttpApi or the function URL

    def moto_template(self, outputs: dict[str, Any]) -> dict[str, Any]:
        """A CloudFormation template of everything moto can create, with ``outputs`` (intrinsics
        that CloudFormation resolves for the emulator, such as the functions' environment)."""
        kept = {
            name: decide(resource, self.conditions)
            for name, resource in self.resources.items()
            if not resource["Type"].startswith(EMULATED_PREFIXES)
            and self.conditions.get(resource.get("Condition", ""), True)
        }
        # Drop what refers to a dropped resource (an alarm on a function), until nothing does.
        while True:
            dangling = [name for name, res in kept.items() if _refs(res) - kept.keys()]
            if not dangling:
                break
            for name in dangling:
                del kept[name]
        for resource in kept.values():
            resource.pop("Condition", None)  # conditions are already decided
        return {
            "AWSTemplateFormatVersion": "2010-09-09",
            "Resources": kept,
            "Outputs": {name: {"Value": value} for name, value in outputs.items()},
        }


def decide(node: Any, conditions: dict[str, bool]) -> Any:
    """``node`` with each Fn::If replaced by its chosen branch (AWS::NoValue left out)."""
    if isinstance(node, dict):
        if "Fn::If" in node:
            name, when_true, when_false = node["Fn::If"]
            return decide(when_true if conditions[name] else when_false, conditions)
        decided = {key: decide(value, conditions) for key, value in node.items()}
        return {key: value for key, value in decided.items() if value != _NO_VALUE}
    if isinstance(node, list):
        return [decide(item, conditions) for item in node if item != _NO_VALUE]
    return node


_NO_VALUE = {"Ref": "AWS::NoValue"}


def _refs(node: Any) -> set[str]:
    """Logical ids a piece of template refers to (Ref, GetAtt, ${Name} in Sub)."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str) and not value.startswith("AWS::"):
                found.add(value)
            elif key == "Fn::GetAtt":
                parts = value if isinstance(value, list) else str(value).split(".")
                found.add(str(parts[0]))
            elif key == "Fn::Sub":
                text = value if isinstance(value, str) else value[0]
                for name in _sub_names(text):
                    found.add(name)
                if not isinstance(value, str):
                    found |= _refs(value[1])
                    found -= set(value[1])
            else:
                found |= _refs(value)
    elif isinstance(node, list):
        for item in node:
            found |= _refs(item)
    return found


def _sub_names(text: str) -> Iterator[str]:
    start = 0
    while (begin := text.find("${", start)) >= 0:
        end = text.index("}", begin)
        name = text[begin + 2 : end].split(".", 1)[0]
        if not name.startswith(("AWS::", "!")):
            yield name
        start = end + 1


def _condition(expr: Any, params: dict[str, str], conditions: dict[str, Any]) -> bool:
    """Evaluate a condition of the template (Equals, Not, And, Or, Condition) offline."""
    if isinstance(expr, dict):
        ((name, value),) = expr.items()
        if name == "Fn::Equals":
            left, right = (_value(v, params) for v in value)
            return left == right
        if name == "Fn::Not":
            return not _condition(value[0], params, conditions)
        if name == "Fn::And":
            return all(_condition(v, params, conditions) for v in value)
        if name == "Fn::Or":
            return any(_condition(v, params, conditions) for v in value)
        if name == "Condition":
            return _condition(conditions[value], params, conditions)
    raise ValueError(f"unsupported condition {expr!r}")


def _value(node: Any, params: dict[str, str]) -> Any:
    if isinstance(node, dict) and "Ref" in node:
        return params[node["Ref"]]
    return node


def transform_template(
    parameters: dict[str, str] | None = None, path: Path = TEMPLATE
) -> Transformed:
    """Apply the SAM transform offline (as `sam deploy` has CloudFormation do) and sort out
    what moto creates and what the emulator plays."""
    sam = load_template(path)
    params = {
        name: str(spec.get("Default", "")) for name, spec in sam.get("Parameters", {}).items()
    }
    params.update(parameters or {})
    code_dirs: dict[str, Path] = {}
    global_code = sam.get("Globals", {}).get("Function", {}).get("CodeUri")
    # The transform wants code in S3 (as after `sam package`); remember where it really is.
    fragment = copy.deepcopy(sam)
    for name, resource in fragment["Resources"].items():
        props = resource.setdefault("Properties", {})
        if resource["Type"] == "AWS::Serverless::Function":
            code_dirs[name] = (path.parent / (props.get("CodeUri") or global_code)).resolve()
            props["CodeUri"] = f"s3://local/{name}.zip"
        elif resource["Type"] == "AWS::Serverless::LayerVersion":
            props["ContentUri"] = f"s3://local/{name}.zip"
    if "CodeUri" in fragment.get("Globals", {}).get("Function", {}):
        del fragment["Globals"]["Function"]["CodeUri"]
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    cfn = transform(fragment, params, _NoManagedPolicies())

    raw_conditions = cfn.get("Conditions", {})
    conditions = {
        name: _condition(expr, params, raw_conditions) for name, expr in raw_conditions.items()
    }
    result = Transformed(resources=cfn["Resources"], parameters=params, conditions=conditions)
    for name, resource in cfn["Resources"].items():
        props = resource.get("Properties", {})
        kind = resource["Type"]
        if not conditions.get(resource.get("Condition", ""), True):
            continue
        if kind == "AWS::Lambda::Function":
            role = _role(cfn["Resources"], props.get("Role"))
            result.functions[name] = Function(
                logical_id=name,
                code_dir=code_dirs[name],
                handler=props["Handler"],
                timeout=int(props.get("Timeout", 3)),
                memory_mb=int(props.get("MemorySize", 128)),
                environment=props.get("Environment", {}).get("Variables", {}),
                statements=[
                    statement
                    for policy in role.get("Policies", [])
                    for statement in as_list(policy["PolicyDocument"]["Statement"])
                ],
                managed_policies=list(role.get("ManagedPolicyArns", [])),
            )
        elif kind == "AWS::Lambda::EventSourceMapping":
            result.sqs_triggers.append(
                SqsTrigger(
                    function=props["FunctionName"]["Ref"],
                    queue_arn=props["EventSourceArn"],
                    batch_size=int(_value(props.get("BatchSize", 10), params)),
                    batching_window=float(
                        _value(props.get("MaximumBatchingWindowInSeconds", 0), params)
                    ),
                    report_failures="ReportBatchItemFailures"
                    in props.get("FunctionResponseTypes", []),
                )
            )
        elif kind == "AWS::Events::Rule" and "ScheduleExpression" in props:
            for target in props.get("Targets", []):
                function = target["Arn"]["Fn::GetAtt"][0]
                result.schedules[function] = props["ScheduleExpression"]
        elif kind == "AWS::ApiGatewayV2::Integration":
            result.api_function = props["IntegrationUri"]["Fn::GetAtt"][0]
        elif kind == "AWS::Lambda::Url":
            result.api_function = props["TargetFunctionArn"]["Fn::GetAtt"][0]
    return result


def _role(resources: dict[str, Any], role: Any) -> dict[str, Any]:
    """The properties of the template's role a function's ``Role`` names (none: empty)."""
    if isinstance(role, dict) and "Fn::GetAtt" in role:
        found: dict[str, Any] = resources[role["Fn::GetAtt"][0]].get("Properties", {})
        return found
    return {}


def as_list(node: Any) -> list[Any]:
    """A template's one-or-many value (Statement, Action, Resource) as a list."""
    return node if isinstance(node, list) else [node]


def rate_seconds(expression: str) -> int:
    """`rate(1 minute)` → 60."""
    amount, unit = expression.removeprefix("rate(").removesuffix(")").split()
    return int(amount) * {"minute": 60, "minutes": 60, "hour": 3600, "hours": 3600}.get(
        unit, 86_400
    )
