"""The AWS CLI v2, standing in, for the calls deploy/README.md and the stack's bootstrap make.

Answers have the CLI's shapes and go through the same ``--query`` (JMESPath) and ``--output text``
rendering. CloudFormation checks parameters as CloudFormation does (unknown names, AllowedPattern,
required values on create, previous values kept on update) and "boots" the instance on create: the
template's UserData, substituted with the stack's parameters, runs as root in the stand-in instance;
the stack fails unless the bootstrap signals success. SSM's AWS-RunShellScript runs its commands
on the stand-in instance too. S3 is a folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import jmespath
import yaml

from standins.instance import run_on_instance
from standins.recording import record

ACCOUNT = "123456789012"
INSTANCE_ID = "i-0123456789abcdef0"
ELASTIC_IP = "203.0.113.10"
MULTI = {"--parameter-overrides", "--capabilities"}
FLAGS = {"--only-show-errors", "--force", "--no-paginate"}


def _state() -> Path:
    return Path(os.environ["STANDIN_STATE"])


def _opts(args: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    positional: list[str] = []
    opts: dict[str, list[str]] = {}
    key = None
    for arg in args:
        if arg in FLAGS:
            opts[arg], key = [], None
        elif arg.startswith("--"):
            key = arg
            opts.setdefault(key, [])
        elif key is not None:
            opts[key].append(arg)
            if key not in MULTI:
                key = None
        else:
            positional.append(arg)
    return positional, opts


def _one(opts: dict[str, list[str]], name: str) -> str:
    values = opts.get(name) or []
    if len(values) != 1:
        raise SystemExit(f"aws: error: {name} needs exactly one value")
    return values[0]


def _emit(data: Any, opts: dict[str, list[str]]) -> int:
    if "--query" in opts:
        data = jmespath.search(_one(opts, "--query"), data)
    if (opts.get("--output") or ["json"])[0] == "text":
        if isinstance(data, list):
            flat = [x for item in data for x in (item if isinstance(item, list) else [item])]
            print("\t".join("None" if x is None else str(x) for x in flat))
        else:
            print("None" if data is None else data)
    else:
        print(json.dumps(data, indent=4))
    return 0


# -- CloudFormation ----------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    pass


def _tag(loader: _Loader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        return {name: loader.construct_scalar(node)}
    if isinstance(node, yaml.SequenceNode):
        return {name: loader.construct_sequence(node, deep=True)}
    return {name: loader.construct_mapping(node, deep=True)}


_Loader.add_multi_constructor("!", _tag)


def _sub(text: str, values: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("!"):
            return "${" + name[1:] + "}"
        if name not in values:
            raise SystemExit(f"Template error: unresolved ${{{name}}} in Fn::Sub")
        return values[name]

    return re.sub(r"\$\{([^}]+)\}", one, text)


def _values(stack: dict[str, Any]) -> dict[str, str]:
    return {
        **stack["parameters"],
        "AWS::Region": stack["region"],
        "AWS::StackName": stack["name"],
        "AWS::Partition": "aws",
        "AWS::AccountId": ACCOUNT,
        "GatewayAddress": ELASTIC_IP,
        "ParentInstance": INSTANCE_ID,
        "ParentInstance.PrivateIp": "172.31.0.10",
        "EnclaveRole.Arn": f"arn:aws:iam::{ACCOUNT}:role/{stack['parameters'].get('EnclaveRoleName', '')}",
    }


def _deploy(opts: dict[str, list[str]]) -> int:
    name = _one(opts, "--stack-name")
    template = yaml.load(Path(_one(opts, "--template-file")).read_text(), Loader=_Loader)
    if "CAPABILITY_NAMED_IAM" not in opts.get("--capabilities", []):
        print(
            "An error occurred (InsufficientCapabilitiesException): Requires capabilities : [CAPABILITY_NAMED_IAM]",
            file=sys.stderr,
        )
        return 255
    given = dict(item.split("=", 1) for item in opts.get("--parameter-overrides", []))
    declared = template["Parameters"]
    unknown = set(given) - set(declared)
    if unknown:
        print(
            f"An error occurred (ValidationError): Parameters: {sorted(unknown)} do not exist in the template",
            file=sys.stderr,
        )
        return 255
    path = _state() / f"stack-{name}.json"
    previous = json.loads(path.read_text()) if path.exists() else None
    params = {**(previous["parameters"] if previous else {}), **given}
    for key, spec in declared.items():
        if key not in params and "Default" in spec:
            params[key] = str(spec["Default"])
        if key not in params:
            print(
                f"An error occurred (ValidationError): Parameters: [{key}] must have values", file=sys.stderr
            )
            return 255
        pattern = spec.get("AllowedPattern")
        if pattern and spec.get("Type") == "String" and not re.fullmatch(pattern, params[key]):
            print(
                f"An error occurred (ValidationError): Parameter '{key}' must match pattern {pattern}",
                file=sys.stderr,
            )
            return 255
    stack = {"name": name, "region": os.environ.get("AWS_REGION", "us-east-1"), "parameters": params}
    if previous is None:
        user_data = template["Resources"]["ParentInstance"]["Properties"]["UserData"]["Fn::Base64"]["Fn::Sub"]
        signal = _state() / "cfn-signal"
        signal.unlink(missing_ok=True)
        run_on_instance(_sub(user_data, _values(stack)))
        if not signal.exists() or signal.read_text() != "0":
            print(
                f"\nFailed to create/update the stack. Run the following command\nto fetch the list of events leading up to the failure\naws cloudformation describe-stack-events --stack-name {name}",
                file=sys.stderr,
            )
            return 255
    outputs = []
    has_key = params.get("KeyPolicy", "") != ""
    for key, spec in template["Outputs"].items():
        if spec.get("Condition") == "HasKeyPolicy" and not has_key:
            continue
        value = spec["Value"]
        if "Fn::Sub" in value:
            text = _sub(value["Fn::Sub"], _values(stack))
        elif "Ref" in value:
            text = _values(stack).get(value["Ref"], params.get(value["Ref"], ""))
        elif "Fn::GetAtt" in value:
            target = value["Fn::GetAtt"]
            text = _values(stack).get(target if isinstance(target, str) else ".".join(target), "")
            if text == "" and "DataKey" in str(target):
                text = f"arn:aws:kms:{stack['region']}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
        outputs.append({"OutputKey": key, "OutputValue": text})
    stack["outputs"] = outputs
    path.write_text(json.dumps(stack))
    print(
        f"\nWaiting for changeset to be created..\nWaiting for stack create/update to complete\nSuccessfully created/updated stack - {name}"
    )
    return 0


def cloudformation(cmd: str, opts: dict[str, list[str]]) -> int:
    if cmd == "deploy":
        return _deploy(opts)
    path = _state() / f"stack-{_one(opts, '--stack-name')}.json"
    if not path.exists():
        print(
            "An error occurred (ValidationError) when calling the DescribeStacks operation: Stack does not exist",
            file=sys.stderr,
        )
        return 254
    stack = json.loads(path.read_text())
    if cmd == "describe-stacks":
        return _emit(
            {
                "Stacks": [
                    {
                        "StackName": stack["name"],
                        "StackStatus": "CREATE_COMPLETE",
                        "Outputs": stack["outputs"],
                    }
                ]
            },
            opts,
        )
    if cmd == "delete-stack":
        path.unlink()
        return 0
    raise SystemExit(f"stand-in aws: cloudformation {cmd} is not known")


# -- SSM -------------------------------------------------------------------------------------


def ssm(cmd: str, opts: dict[str, list[str]]) -> int:
    if cmd == "get-parameter":
        name = _one(opts, "--name")
        return _emit({"Parameter": {"Name": name, "Type": "String", "Value": "ami-0123456789abcdef0"}}, opts)
    if cmd == "send-command":
        if (
            _one(opts, "--instance-ids") != INSTANCE_ID
            or _one(opts, "--document-name") != "AWS-RunShellScript"
        ):
            print("An error occurred (InvalidInstanceId)", file=sys.stderr)
            return 254
        params = json.loads(_one(opts, "--parameters"))
        done = run_on_instance("\n".join(params["commands"]), capture=True)
        number = len(list(_state().glob("ssm-*.json"))) + 1
        command_id = f"0b1c2d3e-0000-4000-8000-{number:012d}"
        result = {
            "Status": "Success" if done.returncode == 0 else "Failed",
            "StandardOutputContent": done.stdout,
            "StandardErrorContent": done.stderr,
        }
        (_state() / f"ssm-{command_id}.json").write_text(json.dumps(result))
        return _emit({"Command": {"CommandId": command_id, "Status": "Pending"}}, opts)
    if cmd == "get-command-invocation":
        result = json.loads((_state() / f"ssm-{_one(opts, '--command-id')}.json").read_text())
        query = (opts.get("--query") or [""])[0]
        if (
            query in ("StandardOutputContent", "StandardErrorContent")
            and (opts.get("--output") or [""])[0] == "text"
        ):
            sys.stdout.write(result[query])  # the CLI prints the content as it is
            return 0
        return _emit(result, opts)
    raise SystemExit(f"stand-in aws: ssm {cmd} is not known")


# -- S3, STS, EC2, KMS -------------------------------------------------------------------------


def _s3_path(url: str) -> Path:
    if not url.startswith("s3://"):
        raise SystemExit(f"stand-in aws: {url} is not an s3:// URL")
    return _state() / "s3" / url[5:]


def s3(cmd: str, positional: list[str], opts: dict[str, list[str]]) -> int:
    if cmd == "mb":
        bucket = _s3_path(positional[0])
        if bucket.exists():
            print("make_bucket failed: BucketAlreadyOwnedByYou", file=sys.stderr)
            return 1
        bucket.mkdir(parents=True)
        print(f"make_bucket: {positional[0][5:]}")
        return 0
    if cmd == "cp":
        source, target = positional
        if source.startswith("s3://"):
            if not _s3_path(source).is_file():
                print(
                    f'fatal error: An error occurred (404) when calling the HeadObject operation: Key "{source}" does not exist',
                    file=sys.stderr,
                )
                return 1
            shutil.copyfile(_s3_path(source), target)
        else:
            bucket = _s3_path("s3://" + target[5:].split("/", 1)[0])
            if not bucket.is_dir():
                print("upload failed: NoSuchBucket", file=sys.stderr)
                return 1
            _s3_path(target).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, _s3_path(target))
        if "--only-show-errors" not in opts:
            print(f"copy: {source} to {target}")
        return 0
    if cmd == "rb":
        shutil.rmtree(_s3_path(positional[0]))
        print(f"remove_bucket: {positional[0][5:]}")
        return 0
    raise SystemExit(f"stand-in aws: s3 {cmd} is not known")


def _file_arg(value: str) -> str:
    """The CLI's ``file://PATH`` parameter values (relative to the working directory)."""
    return Path(value.removeprefix("file://")).read_text() if value.startswith("file://") else value


def kms(cmd: str, opts: dict[str, list[str]]) -> int:
    """A real KMS API answers: the KMS emulator the test names in ``AWS_ENDPOINT_URL_KMS`` (as the AWS
    CLI does), with the environment's credentials, so the keys and policies the README's commands make
    are enforced by the emulator's policy evaluation."""
    if not os.environ.get("AWS_ENDPOINT_URL_KMS"):
        print("stand-in aws: kms needs AWS_ENDPOINT_URL_KMS (the KMS emulator's URL)", file=sys.stderr)
        return 252
    import boto3

    region = (opts.get("--region") or [os.environ.get("AWS_REGION", "us-east-1")])[0]
    client = boto3.client("kms", region_name=region)
    if cmd == "create-key":
        args = {"Policy": _file_arg(_one(opts, "--policy"))}
        if "--description" in opts:
            args["Description"] = _one(opts, "--description")
        reply = client.create_key(**args)
        return _emit(json.loads(json.dumps({"KeyMetadata": reply["KeyMetadata"]}, default=str)), opts)
    client.put_key_policy(
        KeyId=_one(opts, "--key-id"),
        PolicyName=_one(opts, "--policy-name"),
        Policy=_file_arg(_one(opts, "--policy")),
    )
    return 0


def main(argv: list[str]) -> int:
    record("aws", argv)
    service, cmd, *rest = argv
    positional, opts = _opts(rest)
    if service == "cloudformation":
        return cloudformation(cmd, opts)
    if service == "ssm":
        return ssm(cmd, opts)
    if service == "s3":
        return s3(cmd, positional, opts)
    if service == "sts" and cmd == "get-caller-identity":
        return _emit(
            {"UserId": "AIDAEXAMPLE", "Account": ACCOUNT, "Arn": f"arn:aws:iam::{ACCOUNT}:role/Admin"}, opts
        )
    if service == "ec2" and cmd == "describe-subnets":
        subnet = {"VpcId": "vpc-0abc1234", "SubnetId": "subnet-0abc1234", "DefaultForAz": True}
        return _emit({"Subnets": [subnet]}, opts)
    if service == "kms" and cmd == "schedule-key-deletion":
        return _emit({"KeyId": _one(opts, "--key-id"), "KeyState": "PendingDeletion"}, opts)
    if service == "kms" and cmd in ("create-key", "put-key-policy"):
        return kms(cmd, opts)
    print(f"stand-in aws: {service} {cmd} is not known", file=sys.stderr)
    return 252
