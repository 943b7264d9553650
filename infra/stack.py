"""template.yaml's resources on a moto server: what moto's CloudFormation creates, it creates;
the few resource kinds it lacks (secrets, alarms) and settings it ignores (DynamoDB TTL) are
applied here from the same template, through the ordinary AWS APIs."""

from __future__ import annotations

import json
import logging
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3

from infra.template import Transformed, decide

log = logging.getLogger("infra.stack")


@dataclass(frozen=True, slots=True)
class _Out:
    """Where a resolved stack output goes back into a piece of template."""

    name: str


def _is_intrinsic(node: Any) -> bool:
    return (
        isinstance(node, dict)
        and len(node) == 1
        and (next(iter(node)) == "Ref" or next(iter(node)).startswith("Fn::"))
    )


def _collect(node: Any, outputs: dict[str, Any]) -> Any:
    """``node`` with every intrinsic moved into ``outputs`` (CloudFormation resolves them)."""
    if _is_intrinsic(node):
        name = f"Resolved{len(outputs)}"
        outputs[name] = node
        return _Out(name)
    if isinstance(node, dict):
        return {key: _collect(value, outputs) for key, value in node.items()}
    if isinstance(node, list):
        return [_collect(item, outputs) for item in node]
    return node


def _fill(node: Any, values: dict[str, str]) -> Any:
    if isinstance(node, _Out):
        return values[node.name]
    if isinstance(node, dict):
        return {key: _fill(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [_fill(item, values) for item in node]
    return node


def _substitute(node: Any, refs: dict[str, str], arns: dict[str, str]) -> Any:
    """Resolve Ref / GetAtt .Arn of resources that are not in moto's stack."""
    if isinstance(node, dict):
        if set(node) == {"Ref"} and node["Ref"] in refs:
            return refs[node["Ref"]]
        if set(node) == {"Fn::GetAtt"} and node["Fn::GetAtt"][0] in arns:
            return arns[node["Fn::GetAtt"][0]]
        return {key: _substitute(value, refs, arns) for key, value in node.items()}
    if isinstance(node, list):
        return [_substitute(item, refs, arns) for item in node]
    return node


@dataclass
class Deployed:
    """The stack as the emulator needs it: each function's environment and the queues (and
    its role's inline policy statements, resources resolved to this stack's ARNs)."""

    environments: dict[str, dict[str, str]]
    trigger_queue_urls: list[str]
    physical: dict[str, str] = field(default_factory=dict)  # logical id → physical id
    statements: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class LocalStack:
    """Creates one copy of template.yaml's resources on the moto server at ``endpoint_url``."""

    def __init__(self, transformed: Transformed, endpoint_url: str, name: str = "relay") -> None:
        self.transformed = transformed
        self.endpoint_url = endpoint_url
        self.name = name
        self.session = boto3.session.Session()

    def client(self, service: str) -> Any:
        return self.session.client(service, endpoint_url=self.endpoint_url)

    def deploy(self) -> Deployed:
        t = self.transformed
        emulated_refs = {name: f"{self.name}-{name}" for name in t.functions}
        emulated_arns = {
            name: f"arn:aws:lambda:{self.session.region_name}:123456789012:function:{ref}"
            for name, ref in emulated_refs.items()
        }
        # Resource kinds moto's CloudFormation lacks: created directly, referenced literally.
        direct: dict[str, Any] = {}
        for name, resource in t.resources.items():
            if resource["Type"] in _DIRECT_FIRST:
                ref = _DIRECT_FIRST[resource["Type"]](self, name, resource.get("Properties", {}))
                emulated_refs[name] = ref
                direct[name] = resource
        resources = {
            name: _substitute(resource, emulated_refs, emulated_arns)
            for name, resource in t.resources.items()
            if name not in direct
        }
        later = {
            name: resource
            for name, resource in resources.items()
            if resource["Type"] in _DIRECT_AFTER
            and t.conditions.get(resource.get("Condition", ""), True)
        }
        outputs: dict[str, Any] = {}
        # A function's environment takes parameters as they are (moto's outputs garble numbers).
        env_refs = {**t.parameters, **emulated_refs}
        environments = {
            name: _collect(_substitute(fn.environment, env_refs, emulated_arns), outputs)
            for name, fn in t.functions.items()
        }
        statements = {
            name: _collect(_substitute(fn.statements, env_refs, emulated_arns), outputs)
            for name, fn in t.functions.items()
        }
        queues = [_collect(trigger.queue_arn, outputs) for trigger in t.sqs_triggers]
        later_props = {
            name: _collect(decide(resource.get("Properties", {}), t.conditions), outputs)
            for name, resource in later.items()
        }
        view = Transformed(resources=resources, parameters=t.parameters, conditions=t.conditions)
        template = view.moto_template(outputs)
        for name in later:
            template["Resources"].pop(name, None)
        missing = set(outputs) - set(template["Outputs"])
        if missing:
            raise RuntimeError(f"outputs refer to resources moto did not create: {missing}")
        cfn = self.client("cloudformation")
        cfn.create_stack(
            StackName=self.name,
            TemplateBody=json.dumps(template),
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
        )
        stack = cfn.describe_stacks(StackName=self.name)["Stacks"][0]
        if stack["StackStatus"] != "CREATE_COMPLETE":
            raise RuntimeError(f"local stack {self.name}: {stack['StackStatus']}")
        values = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        physical = {
            r["LogicalResourceId"]: r["PhysicalResourceId"]
            for r in cfn.list_stack_resources(StackName=self.name)["StackResourceSummaries"]
        }
        physical.update(emulated_refs)
        for name, resource in later.items():
            _DIRECT_AFTER[resource["Type"]](self, name, _fill(later_props[name], values))
        self._apply_ttl(template["Resources"], physical)
        sqs = self.client("sqs")
        return Deployed(
            environments={
                name: {k: str(v) for k, v in _fill(env, values).items()}
                for name, env in environments.items()
            },
            trigger_queue_urls=[
                sqs.get_queue_url(QueueName=_fill(arn, values).rsplit(":", 1)[1])["QueueUrl"]
                for arn in queues
            ],
            physical=physical,
            statements={name: _fill(found, values) for name, found in statements.items()},
        )

    def _apply_ttl(self, resources: dict[str, Any], physical: dict[str, str]) -> None:
        """moto's CloudFormation ignores TimeToLiveSpecification; apply it as declared."""
        dynamodb = self.client("dynamodb")
        for name, resource in resources.items():
            ttl = resource.get("Properties", {}).get("TimeToLiveSpecification")
            if resource["Type"] == "AWS::DynamoDB::Table" and ttl:
                dynamodb.update_time_to_live(
                    TableName=physical[name],
                    TimeToLiveSpecification={
                        "AttributeName": ttl["AttributeName"],
                        "Enabled": bool(ttl.get("Enabled", True)),
                    },
                )

    def delete(self) -> None:
        self.client("cloudformation").delete_stack(StackName=self.name)


def _create_secret(stack: LocalStack, name: str, props: dict[str, Any]) -> str:
    """A Secrets Manager secret, generated as GenerateSecretString asks; returns its ARN."""
    spec = props.get("GenerateSecretString", {})
    alphabet = string.ascii_letters + string.digits
    if not spec.get("ExcludePunctuation"):
        alphabet += "!#$%&()*+,-./:;<=>?@[]^_`{|}~"
    value = props.get("SecretString") or "".join(
        secrets.choice(alphabet) for _ in range(int(spec.get("PasswordLength", 32)))
    )
    created = stack.client("secretsmanager").create_secret(
        Name=f"{stack.name}-{name}", SecretString=value
    )
    return str(created["ARN"])


def _create_alarm(stack: LocalStack, name: str, props: dict[str, Any]) -> None:
    stack.client("cloudwatch").put_metric_alarm(AlarmName=f"{stack.name}-{name}", **props)


_DIRECT_FIRST: dict[str, Callable[[LocalStack, str, dict[str, Any]], str]] = {
    "AWS::SecretsManager::Secret": _create_secret,
}
_DIRECT_AFTER: dict[str, Callable[[LocalStack, str, dict[str, Any]], None]] = {
    "AWS::CloudWatch::Alarm": _create_alarm,
}
