"""Template assertions on the synthesized prod stack: every property issue #12 names, read from the template."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from tests.infra.conftest import ROOT, SENTRY_SECRET, Synth, props, resources

RUNTIME = re.compile(r"^python3\.(\d+)$")


@pytest.fixture(scope="module")
def assertions(template: dict[str, Any]) -> Template:
    """aws_cdk.assertions over the synthesized JSON."""
    return Template.from_json(template, skip_cyclical_dependencies_check=True)


def statements(template: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every IAM statement of every identity policy and role, with the logical id that holds it."""
    found = []
    for logical_id, body in template["Resources"].items():
        if body["Type"] == "AWS::IAM::Policy":
            docs = [body["Properties"]["PolicyDocument"]]
        elif body["Type"] == "AWS::IAM::Role":
            docs = [p["PolicyDocument"] for p in body["Properties"].get("Policies", [])]
        else:
            continue
        found += [(logical_id, s) for doc in docs for s in doc["Statement"]]
    return found


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def roles_of_policies(template: dict[str, Any], logical_id: str) -> list[str]:
    """The role logical ids a policy is attached to."""
    return [r["Ref"] for r in template["Resources"][logical_id]["Properties"].get("Roles", [])]


def function_role(template: dict[str, Any], function_id: str) -> str:
    return template["Resources"][function_id]["Properties"]["Role"]["Fn::GetAtt"][0]  # type: ignore[no-any-return]


def db_users(template: dict[str, Any], role_id: str) -> set[str]:
    """The database users a role may connect as (from its rds-db:connect resources)."""
    users = set()
    for policy_id, statement in statements(template):
        if role_id in roles_of_policies(template, policy_id) and "rds-db:connect" in as_list(statement["Action"]):
            for resource in as_list(statement["Resource"]):
                users.add(json.dumps(resource).rsplit("/", 1)[-1].strip('"]}'))
    return users


def test_the_stack_is_prod_so_chalice_takes_the_prod_stage(template: dict[str, Any]) -> None:
    api = template["Resources"]["APIHandler"]["Properties"]
    # Values only .chalice/config.json's prod stage sets: with another scope name they would be missing.
    assert api["MemorySize"] == 512
    assert api["Timeout"] == 28
    assert api["Environment"]["Variables"]["STAGE"] == "prod"


def test_every_function_runs_python_312_or_newer(template: dict[str, Any]) -> None:
    runtimes = [p["Runtime"] for p in props(template, "AWS::Lambda::Function") + props(
        template, "AWS::Serverless::Function") if "Runtime" in p]
    assert len(runtimes) >= 12
    for runtime in runtimes:
        if runtime.startswith("nodejs"):  # CDK's own custom-resource providers (no app code)
            continue
        match = RUNTIME.match(runtime)
        assert match and int(match.group(1)) >= 12, runtime


def test_aurora_is_encrypted_deletion_protected_iam_authenticated_and_keeps_backups_at_most_35_days(
        assertions: Template, template: dict[str, Any]) -> None:
    (key_id,) = resources(template, "AWS::KMS::Key")
    assertions.has_resource_properties("AWS::RDS::DBCluster", {
        "StorageEncrypted": True, "KmsKeyId": {"Fn::GetAtt": [key_id, "Arn"]}, "DeletionProtection": True,
        "EnableIAMDatabaseAuthentication": True, "Engine": "aurora-postgresql",
        "ServerlessV2ScalingConfiguration": Match.object_like({"MinCapacity": 0.5}),
    })
    (cluster,) = props(template, "AWS::RDS::DBCluster")
    assert 1 <= cluster["BackupRetentionPeriod"] <= 35
    assertions.has_resource_properties("AWS::RDS::DBClusterParameterGroup", {
        "Parameters": Match.object_like({"rds.force_ssl": "1"})})
    for instance in props(template, "AWS::RDS::DBInstance"):
        assert instance.get("PubliclyAccessible") is False


def test_the_proxy_requires_tls_and_iam_end_to_end(assertions: Template) -> None:
    assertions.has_resource_properties("AWS::RDS::DBProxy", {
        "RequireTLS": True, "EngineFamily": "POSTGRESQL", "DefaultAuthScheme": "IAM_AUTH", "DebugLogging": False})


def test_no_database_password_in_any_environment(template: dict[str, Any]) -> None:
    for body in props(template, "AWS::Lambda::Function") + props(template, "AWS::Serverless::Function"):
        for name, value in body.get("Environment", {}).get("Variables", {}).items():
            text = json.dumps(value)
            assert "password" not in text.lower(), name
            if name.endswith("DATABASE_URL"):
                assert "sslmode=verify-full" in text, name


def test_secrets_are_dynamic_references_never_literals(template: dict[str, Any]) -> None:
    env = template["Resources"]["APIHandler"]["Properties"]["Environment"]["Variables"]
    assert env["APP_SECRET_KEY"]["Fn::Join"][1][0] == "{{resolve:secretsmanager:"
    assert env["SENTRY_DSN"] == f"{{{{resolve:secretsmanager:{SENTRY_SECRET}:SecretString:::}}}}"
    jobs = [f for f in props(template, "AWS::Lambda::Function") if f.get("Handler", "").startswith("functions.")
            and f["Handler"] != "functions.migrate.handler"]
    for function in jobs:
        variables = function["Environment"]["Variables"]
        assert "{{resolve:secretsmanager:" in json.dumps(variables["APP_SECRET_KEY"])
        assert variables["SENTRY_DSN"] == env["SENTRY_DSN"]


def test_the_api_role_connects_as_crm_app_and_never_as_crm_jobs(template: dict[str, Any]) -> None:
    assert db_users(template, function_role(template, "APIHandler")) == {"crm_app"}


# Written out here, not read from the stack's own table: the jobs cross tenants as crm_jobs; the inbound
# consumer's work is one tenant's at a time, so it gets the API's narrower crm_app.
EXPECTED_DB_USERS = {"process_inbound": "crm_app", "purge_auth": "crm_jobs", "purge_audit_log": "crm_jobs",
                     "purge_webhook_log": "crm_jobs", "deliver_webhooks": "crm_jobs", "expire_proposals": "crm_jobs",
                     "purge_workspaces": "crm_jobs", "backup_tenants": "crm_jobs", "export_tenant": "crm_jobs",
                     "delete_tenant": "crm_jobs", "restore_tenant": "crm_jobs", "rotate_credentials": "crm_jobs"}


def function_id(template: dict[str, Any], module: str) -> str:
    (found,) = [k for k, v in resources(template, "AWS::Lambda::Function").items()
                if v["Properties"].get("Handler") == f"functions.{module}.handler"]
    return found


def test_each_function_connects_as_its_own_database_user(template: dict[str, Any]) -> None:
    for module, user in EXPECTED_DB_USERS.items():
        assert db_users(template, function_role(template, function_id(template, module))) == {user}, module
    assert db_users(template, function_role(template, function_id(template, "migrate"))) == set()


def test_the_proxy_signs_in_to_the_cluster_as_the_two_runtime_users_only(template: dict[str, Any]) -> None:
    (proxy,) = props(template, "AWS::RDS::DBProxy")
    role_id = proxy["RoleArn"]["Fn::GetAtt"][0]
    cluster_id = next(iter(resources(template, "AWS::RDS::DBCluster")))
    users = db_users(template, role_id)
    assert users == {"crm_app", "crm_jobs"}
    text = json.dumps([s for p, s in statements(template) if role_id in roles_of_policies(template, p)])
    assert f'"{cluster_id}", "DBClusterResourceId"' in text  # dbuser:<cluster resource id>/<user>


def test_the_export_function_may_sign_a_link_to_its_exports_only(template: dict[str, Any]) -> None:
    role = function_role(template, function_id(template, "export_tenant"))
    readable = [json.dumps(statement["Resource"]) for policy_id, statement in statements(template)
                if role in roles_of_policies(template, policy_id) and "s3:GetObject" in as_list(statement["Action"])]
    assert any("/exports/*" in r for r in readable)
    assert not any("/backups/" in r for r in readable)


def test_only_the_api_may_invoke_a_model_and_only_the_configured_one(template: dict[str, Any]) -> None:
    grants = [(roles_of_policies(template, policy_id), statement) for policy_id, statement in statements(template)
              if any(action.startswith("bedrock:") for action in as_list(statement["Action"]))]
    assert len(grants) == 1, grants
    [(roles, statement)] = grants
    assert roles == [function_role(template, "APIHandler")]
    assert as_list(statement["Action"]) == ["bedrock:InvokeModel"]
    resource = json.dumps(statement["Resource"])
    assert "foundation-model/amazon.nova-lite-v1:0" in resource and "*" not in resource


def test_jobs_may_list_exactly_the_prefixes_their_code_lists(template: dict[str, Any]) -> None:
    expected = {"export_tenant": {"tenants/*"}, "backup_tenants": {"backups/*"}, "restore_tenant": {"backups/*"},
                "delete_tenant": {"tenants/*", "exports/*", "backups/*"},
                "purge_workspaces": {"tenants/*", "exports/*", "backups/*"}}
    for module in EXPECTED_DB_USERS:
        role = function_role(template, function_id(template, module))
        prefixes: set[str] = set()
        for policy_id, statement in statements(template):
            if role in roles_of_policies(template, policy_id) and "s3:ListBucket" in as_list(statement["Action"]):
                prefixes |= set(statement["Condition"]["StringLike"]["s3:prefix"])
        assert prefixes == expected.get(module, set()), module


def test_no_iam_statement_allows_every_action_on_every_resource(template: dict[str, Any]) -> None:
    for logical_id, statement in statements(template):
        actions = as_list(statement.get("Action", []))
        wide = [a for a in actions if a == "*" or a.endswith(":*")]
        assert not (wide and "*" in as_list(statement.get("Resource"))), (logical_id, statement)


# Written out, not read from the stack's table: who may use the key. The vault (credentials) and S3/SQS
# objects under SSE-KMS need it; the purges and the deletion touch neither.
KEY_USERS = {"Api": {"kms:Encrypt", "kms:GenerateDataKey", "kms:Decrypt"},
             "processinbound": {"kms:Encrypt", "kms:GenerateDataKey", "kms:Decrypt"},
             "deliverwebhooks": {"kms:Encrypt", "kms:GenerateDataKey", "kms:Decrypt"},
             "backuptenants": {"kms:Encrypt", "kms:GenerateDataKey", "kms:Decrypt"},
             "exporttenant": {"kms:Encrypt", "kms:GenerateDataKey", "kms:Decrypt"},
             "restoretenant": {"kms:Encrypt", "kms:GenerateDataKey", "kms:Decrypt"},
             "rotatecredentials": {"kms:Encrypt", "kms:GenerateDataKey", "kms:Decrypt"},
             "Scheduler": {"kms:Encrypt", "kms:GenerateDataKey", "kms:Decrypt"}}


def test_the_key_rotates_and_its_policy_names_what_each_role_uses(template: dict[str, Any]) -> None:
    (key,) = props(template, "AWS::KMS::Key")
    assert key["EnableKeyRotation"] is True
    by_sid = {s.get("Sid"): s for s in key["KeyPolicy"]["Statement"]}
    # The account's administrators manage the key but cannot use it, nor grant its use.
    assert not {"kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:CreateGrant"} & set(
        by_sid["Administration"]["Action"])
    assert not any(a in ("kms:*", "*") or a.startswith("kms:Create*") for s in by_sid.values()
                   for a in as_list(s["Action"]))
    users = {sid: set(as_list(s["Action"])) - {"kms:DescribeKey"} for sid, s in by_sid.items()
             if sid not in ("Administration", "AuroraStorage", "AlarmsToSns")}
    assert users == KEY_USERS


def test_the_bucket_is_private_sse_kms_and_refuses_plain_http(assertions: Template, template: dict[str, Any]
                                                                ) -> None:
    (key_id,) = resources(template, "AWS::KMS::Key")
    assertions.has_resource_properties("AWS::S3::Bucket", {
        "PublicAccessBlockConfiguration": {"BlockPublicAcls": True, "BlockPublicPolicy": True,
                                           "IgnorePublicAcls": True, "RestrictPublicBuckets": True},
        "BucketEncryption": {"ServerSideEncryptionConfiguration": [Match.object_like({
            "ServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms",
                                              "KMSMasterKeyID": {"Fn::GetAtt": [key_id, "Arn"]}}})]},
    })
    for bucket in props(template, "AWS::S3::Bucket"):
        block = bucket["PublicAccessBlockConfiguration"]
        assert all(block[k] for k in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls",
                                      "RestrictPublicBuckets"))
    for policy in props(template, "AWS::S3::BucketPolicy"):
        denies = [s for s in policy["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
        assert any(s["Condition"].get("Bool", {}).get("aws:SecureTransport") == "false" for s in denies)


def test_exports_expire_and_no_deleted_object_outlives_90_days(template: dict[str, Any]) -> None:
    blobs = [b for b in props(template, "AWS::S3::Bucket") if "BucketEncryption" in b
             and b["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"][
                 "SSEAlgorithm"] == "aws:kms"]
    (bucket,) = blobs
    rules = bucket["LifecycleConfiguration"]["Rules"]
    assert bucket["VersioningConfiguration"]["Status"] == "Enabled"
    noncurrent = [r["NoncurrentVersionExpiration"]["NoncurrentDays"] for r in rules
                  if "NoncurrentVersionExpiration" in r and "Prefix" not in r]
    assert noncurrent and max(noncurrent) <= 90
    (exports,) = [r for r in rules if r.get("Prefix") == "exports/"]
    assert exports["ExpirationInDays"] <= 30


def test_the_queues_are_encrypted_with_a_dlq_and_a_long_enough_visibility(template: dict[str, Any]) -> None:
    (key_id,) = resources(template, "AWS::KMS::Key")
    queues = resources(template, "AWS::SQS::Queue")
    for body in queues.values():
        assert body["Properties"]["KmsMasterKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    consumed = {q_id: q["Properties"] for q_id, q in queues.items() if "RedrivePolicy" in q.get("Properties", {})}
    mappings = props(template, "AWS::Lambda::EventSourceMapping")
    # The inbound events' consumer and the outgoing webhooks' dispatcher, each on its own queue with a DLQ.
    handlers = {}
    for mapping in mappings:
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        function = template["Resources"][mapping["FunctionName"]["Ref"]]["Properties"]
        (queue_id,) = [q for q in consumed if mapping["EventSourceArn"] == {"Fn::GetAtt": [q, "Arn"]}]
        queue = consumed[queue_id]
        assert queue["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0] in queues
        assert queue["RedrivePolicy"]["maxReceiveCount"] >= 1
        assert queue["VisibilityTimeout"] >= 6 * function["Timeout"]
        handlers[function["Handler"]] = queue_id
    assert set(handlers) == {"functions.process_inbound.handler", "functions.deliver_webhooks.handler"}
    assert len(set(handlers.values())) == 2 == len(consumed)


def test_one_lambda_per_handler_module_sharing_one_code_asset(template: dict[str, Any]) -> None:
    modules = sorted(p.stem for p in (ROOT / "functions").glob("*.py")
                     if re.search(r"^def handler\(", p.read_text(), re.M))
    functions = [p for p in props(template, "AWS::Lambda::Function") if p.get("Handler", "").startswith(
        "functions.")]
    assert sorted(p["Handler"].split(".")[1] for p in functions) == modules
    assert len({json.dumps(p["Code"]) for p in functions}) == 1


def test_one_schedule_per_entry_of_schedules_with_its_expression(template: dict[str, Any]) -> None:
    from functions.schedules import SCHEDULES

    # The promises behind them (hourly auth purge, daily backups, the 365-day audit purge, the 30-day
    # webhook log purge, the 7-day workspace purge), written out: dropping an entry from SCHEDULES must fail
    # here too.
    assert {(e.module, e.expression) for e in SCHEDULES} == {
        ("functions.purge_auth", "rate(1 hour)"), ("functions.backup_tenants", "cron(0 2 * * ? *)"),
        ("functions.expire_proposals", "rate(1 hour)"),
        ("functions.deliver_webhooks", "rate(1 minute)"),
        ("functions.purge_audit_log", "cron(30 3 * * ? *)"), ("functions.purge_webhook_log", "cron(45 3 * * ? *)"),
        ("functions.purge_workspaces", "cron(0 4 * * ? *)")}
    schedules = props(template, "AWS::Scheduler::Schedule")
    assert len(schedules) == len(SCHEDULES)
    functions = resources(template, "AWS::Lambda::Function")
    for entry in SCHEDULES:
        (schedule,) = [s for s in schedules if s["ScheduleExpression"] == entry.expression
                       and functions[s["Target"]["Arn"]["Fn::GetAtt"][0]]["Properties"]["Handler"]
                       == f"{entry.module}.handler"]
        assert schedule["ScheduleExpressionTimezone"] == "UTC"
        # The handler takes its slot from the event's time, which the scheduler fills in.
        assert json.loads(schedule["Target"]["Input"])["time"] == "<aws.scheduler.scheduled-time>"
        # An invocation the scheduler cannot deliver goes to a queue that an alarm watches.
        dlq = schedule["Target"]["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0]
        assert any(a.get("Dimensions") == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq, "QueueName"]}}]
                   for a in props(template, "AWS::CloudWatch::Alarm"))


def test_privacy_functions_have_no_schedule(template: dict[str, Any]) -> None:
    functions = resources(template, "AWS::Lambda::Function")
    scheduled = {functions[s["Target"]["Arn"]["Fn::GetAtt"][0]]["Properties"]["Handler"]
                 for s in props(template, "AWS::Scheduler::Schedule")}
    for module in ("export_tenant", "delete_tenant", "restore_tenant", "rotate_credentials", "migrate"):
        assert f"functions.{module}.handler" not in scheduled


def test_migrations_run_on_deploy_before_the_api(template: dict[str, Any]) -> None:
    (trigger_id,) = resources(template, "Custom::Trigger")
    trigger = template["Resources"][trigger_id]
    handler = trigger["Properties"]["HandlerArn"]["Ref"]
    version = template["Resources"][handler]
    function = template["Resources"][version["Properties"]["FunctionName"]["Ref"]]
    assert function["Properties"]["Handler"] == "functions.migrate.handler"
    assert trigger_id in as_list(template["Resources"]["APIHandler"].get("DependsOn", []))
    # The jobs run the same new code: none of them goes live before the migrations either.
    for module in EXPECTED_DB_USERS:
        assert trigger_id in as_list(template["Resources"][function_id(template, module)].get("DependsOn", []))
    assert trigger["Properties"]["InvocationType"] == "RequestResponse"
    cluster = next(iter(resources(template, "AWS::RDS::DBCluster")))
    assert cluster in as_list(trigger.get("DependsOn", []))


def test_the_network_has_private_functions_endpoints_and_a_nat(template: dict[str, Any]) -> None:
    services = [json.dumps(p["ServiceName"]) for p in props(template, "AWS::EC2::VPCEndpoint")]
    for service in (".s3", ".sqs", ".kms", ".email", ".secretsmanager"):
        assert any(service in s for s in services), service
    assert props(template, "AWS::EC2::NatGateway")
    private = {r["Ref"] for p in props(template, "AWS::Lambda::Function") if "VpcConfig" in p
               for r in p["VpcConfig"]["SubnetIds"]}
    api_subnets = {r["Ref"] for r in template["Resources"]["APIHandler"]["Properties"]["VpcConfig"]["SubnetIds"]}
    assert api_subnets == private
    for subnet in private:
        assert template["Resources"][subnet]["Properties"]["MapPublicIpOnLaunch"] is False


def test_security_groups_allow_only_lambda_to_proxy_to_database(template: dict[str, Any]) -> None:
    ingress = props(template, "AWS::EC2::SecurityGroupIngress")
    assert all("CidrIp" not in r and "CidrIpv6" not in r for r in ingress)

    def name(logical_id: str) -> str:
        return re.sub(r"[0-9A-F]{8}$", "", logical_id)

    sources: dict[str, set[str]] = {}
    for rule in ingress:  # every port: CDK writes some rules with the endpoint's port as a GetAtt
        target = name(rule["GroupId"]["Fn::GetAtt"][0])
        sources.setdefault(target, set()).add(name(rule["SourceSecurityGroupId"]["Fn::GetAtt"][0]))
    assert sources["NetworkProxySg"] == {"NetworkLambdaSg"}
    # The proxy, the migration function, and the secret's rotation function (it changes the password).
    assert sources["NetworkDatabaseSg"] == {"NetworkProxySg", "NetworkMigrateSg",
                                            "DataClusterRotationSingleUserSecurityGroup"}
    for group in props(template, "AWS::EC2::SecurityGroup"):
        if "RDS Proxy" in group["GroupDescription"] or "Aurora" in group["GroupDescription"]:
            assert all(e.get("CidrIp") != "0.0.0.0/0" for e in group.get("SecurityGroupEgress", []))


def test_the_api_is_throttled_and_its_access_log_holds_no_query_string(template: dict[str, Any]) -> None:
    (api,) = props(template, "AWS::Serverless::Api")
    (settings,) = api["MethodSettings"]
    assert settings["ThrottlingRateLimit"] > 0 and settings["ThrottlingBurstLimit"] > 0
    assert settings["DataTraceEnabled"] is False
    log_format = api["AccessLogSetting"]["Format"]
    assert "$context.resourcePath" in log_format
    for leaky in ("$context.path", "querystring", "$input", "$context.authorizer", "requestOverride",
                  "sourceIp"):
        assert leaky not in log_format


def test_log_groups_have_an_explicit_retention(template: dict[str, Any]) -> None:
    groups = props(template, "AWS::Logs::LogGroup")
    assert len(groups) >= 12
    assert all(1 <= g["RetentionInDays"] <= 400 for g in groups)
    api_logging = template["Resources"]["APIHandler"]["Properties"]["LoggingConfig"]
    assert api_logging["LogGroup"]["Ref"] in template["Resources"]
    # The groups AWS would otherwise create without a retention: the cluster's exported log, the proxy's.
    names = {json.dumps(g.get("LogGroupName")) for g in groups}
    assert '"/aws/rds/cluster/tenant-crm/postgresql"' in names and '"/aws/rds/proxy/tenant-crm"' in names
    (cluster,) = props(template, "AWS::RDS::DBCluster")
    assert cluster["DBClusterIdentifier"] == "tenant-crm"
    (proxy,) = props(template, "AWS::RDS::DBProxy")
    assert proxy["DBProxyName"] == "tenant-crm"


def test_alarms_watch_dead_letters_errors_throttles_pinning_capacity_and_schedules(template: dict[str, Any]) -> None:
    alarms = props(template, "AWS::CloudWatch::Alarm")
    metrics = {a["MetricName"] for a in alarms if "MetricName" in a}
    assert {"ApproximateNumberOfMessagesVisible", "Errors", "Throttles",
            "DatabaseConnectionsCurrentlySessionPinned", "ACUUtilization"} <= metrics
    descriptions = [a["AlarmDescription"] for a in alarms]
    from functions.schedules import SCHEDULES

    for entry in SCHEDULES:
        assert f"{entry.name}: failed scheduled run" in descriptions
    (topic_id,) = resources(template, "AWS::SNS::Topic")
    assert all(a["AlarmActions"] == [{"Ref": topic_id}] for a in alarms)
    (subscription,) = props(template, "AWS::SNS::Subscription")
    assert subscription["Protocol"] == "email" and subscription["Endpoint"] == "ops@example.com"


def test_mail_has_an_identity_and_a_configuration_set(template: dict[str, Any]) -> None:
    (identity,) = props(template, "AWS::SES::EmailIdentity")
    assert identity["EmailIdentity"] == "crm.example.com"
    (config,) = props(template, "AWS::SES::ConfigurationSet")
    assert config["DeliveryOptions"]["TlsPolicy"] == "REQUIRE"


def test_synth_is_offline_with_pinned_availability_zones(synth: Synth) -> None:
    context = json.loads((ROOT / "infra" / "cdk.context.json").read_text())
    assert any(key.startswith("availability-zones:") for key in context)
    manifest = json.loads((synth.outdir / "manifest.json").read_text())
    missing = [m for a in manifest["artifacts"].values() for m in a.get("metadata", {}).values()
               for m in m if m.get("type") == "aws:cdk:error"]
    assert not missing
    assert "missing" not in manifest


def test_every_cdk_nag_acknowledgement_gives_its_reason(synth: Synth) -> None:
    # The synth ran the AwsSolutions pack as a validation plugin and passed, so every finding is
    # acknowledged; each acknowledgement is recorded in the assembly's metadata with its reason.
    metadata = json.loads((synth.outdir / "prod.metadata.json").read_text())
    acknowledged = {rule: reason for entries in metadata.values() for entry in entries
                    if entry["type"] == "aws:cdk:acknowledged-rules" for rule, reason in entry["data"].items()}
    nag = {rule: reason for rule, reason in acknowledged.items() if "AwsSolutions-" in rule}
    assert nag
    assert all(len(reason) >= 30 for reason in nag.values()), nag


def test_cdk_nag_fails_a_synth_that_has_an_unacknowledged_finding(tmp_path: Path) -> None:
    import aws_cdk as cdk
    from aws_cdk import aws_s3 as s3
    from cdk_nag import AwsSolutionsChecks

    app = cdk.App(outdir=str(tmp_path))
    stack = cdk.Stack(app, "control")
    s3.Bucket(stack, "Plain")  # no TLS-only policy, no access logs: AwsSolutions-S1 and S10
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    with pytest.raises(RuntimeError, match="ValidationFailed") as failed:
        app.synth()
    assert "AwsSolutions-S10" in str(failed.value)


def test_cfn_lint_finds_no_error(synth: Synth) -> None:
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    done = subprocess.run([str(cfn_lint), "--format", "parseable",
                           str(synth.outdir / "prod.template.json")], capture_output=True, text=True, check=False)
    errors = [line for line in done.stdout.splitlines() if re.search(r":E\d+:", line)]
    assert not errors, "\n".join(errors)
    assert done.returncode in (0, 4, 8, 12), done.stderr  # warnings and informational findings only
