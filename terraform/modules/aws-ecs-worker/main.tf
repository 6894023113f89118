# The fallback pull worker (`skylane worker start --pool POOL`) as an ECS Fargate service.
# Its task role may do what the `ecs` adapter (src/skylane/adapters/ecs.py) does to dispatch the
# pool's runs, scoped as the push pool's dispatcher role is (dispatcher_policy() in
# src/skylane/provisioning/aws.py): the cluster, the log group and the roles passed in.

locals {
  slug = coalesce(var.resource_slug, var.pool_name)
  tags = merge(var.tags, { "skylane-pool" = var.pool_name })

  partition = data.aws_partition.current.partition
  region    = data.aws_region.current.id

  execution_policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"

  ecs_tasks_trust = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Effect    = "Allow"
        Principal = { Service = "ecs-tasks.amazonaws.com" }
        Action    = "sts:AssumeRole"
      }
    ]
  })

  # "arn:PARTITION:ecs:REGION:ACCOUNT" and the cluster's name, from cluster_arn.
  cluster_parts  = regex("^(arn:aws[a-z-]*:ecs:[a-z0-9-]+:[0-9]{12}):cluster/([A-Za-z0-9_-]+)$", var.cluster_arn)
  ecs_arn_prefix = local.cluster_parts[0]
  cluster_tasks  = "${local.cluster_parts[0]}:task/${local.cluster_parts[1]}/*"
  log_group_arn  = trimsuffix(var.log_group_arn, ":*")
  pass_roles     = sort(distinct(var.pass_role_arns))

  service_cluster = coalesce(var.service_cluster_arn, var.cluster_arn)

  # The image's ENTRYPOINT is `skylane`: this is `skylane worker start --pool POOL ...`.
  command = concat(
    ["worker", "start", "--pool", var.pool_name],
    var.worker_name != null ? ["--name", var.worker_name] : [],
    var.limit != null ? ["--limit", tostring(var.limit)] : [],
    ["--log-level", var.log_level],
  )
  environment = merge(var.environment, { SKYLANE_API_URL = var.api_url })

  # Fargate's CPU and memory combinations (memory in MiB per CPU units).
  fargate_memory = {
    "256"   = [512, 1024, 2048]
    "512"   = range(1024, 4097, 1024)
    "1024"  = range(2048, 8193, 1024)
    "2048"  = range(4096, 16385, 1024)
    "4096"  = range(8192, 30721, 1024)
    "8192"  = range(16384, 61441, 4096)
    "16384" = range(32768, 122881, 8192)
  }
}

data "aws_partition" "current" {}

data "aws_region" "current" {}

# --- the worker's log group ---------------------------------------------------------------------

resource "aws_cloudwatch_log_group" "this" {
  name              = "/skylane/${local.slug}/worker"
  retention_in_days = var.log_retention_days
  tags              = local.tags

  lifecycle {
    precondition {
      condition     = var.resource_slug != null || (can(regex("^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$", var.pool_name)))
      error_message = "The pool name \"${var.pool_name}\" is not usable as is in AWS resource names (lowercase letters, digits and dashes, not starting or ending with a dash, at most 40 characters): set the resource_slug variable to the provisioner's slug of it (`skylane pool provision --emit-terraform` writes it)."
    }
  }
}

# --- task execution role: pull the image, write logs, read the API key secret --------------------

resource "aws_iam_role" "execution" {
  name               = "skylane-${local.slug}-worker-exec"
  description        = "skylane pool ${var.pool_name}: worker task execution role"
  assume_role_policy = local.ecs_tasks_trust
  tags               = local.tags
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = local.execution_policy_arn
}

data "aws_iam_policy_document" "execution" {
  statement {
    sid       = "ReadTheWorkerApiKey"
    effect    = "Allow"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.api_key_secret_arn]
  }

  dynamic "statement" {
    for_each = var.api_key_kms_key_arn == null ? [] : [var.api_key_kms_key_arn]

    content {
      sid       = "DecryptTheWorkerApiKey"
      effect    = "Allow"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]

      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["secretsmanager.${local.region}.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "skylane-worker-secrets"
  role   = aws_iam_role.execution.name
  policy = data.aws_iam_policy_document.execution.json
}

# --- task role: what the `ecs` adapter needs to dispatch the pool's runs -------------------------

resource "aws_iam_role" "task" {
  name               = "skylane-${local.slug}-worker-task"
  description        = "skylane pool ${var.pool_name}: worker dispatching the pool's runs"
  assume_role_policy = local.ecs_tasks_trust
  tags               = local.tags
}

# The statements of dispatcher_policy(cluster_arn, pass_role_arns, log_group_arn).
data "aws_iam_policy_document" "task" {
  statement {
    sid       = "RunTasksOnThisCluster"
    effect    = "Allow"
    actions   = ["ecs:RunTask"]
    resources = ["${local.ecs_arn_prefix}:task-definition/*"]

    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [var.cluster_arn]
    }
  }

  statement {
    sid       = "ManageTasksOnThisCluster"
    effect    = "Allow"
    actions   = ["ecs:DescribeTasks", "ecs:StopTask"]
    resources = [local.cluster_tasks]

    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [var.cluster_arn]
    }
  }

  statement {
    sid       = "TagTasksAtLaunch"
    effect    = "Allow"
    actions   = ["ecs:TagResource"]
    resources = [local.cluster_tasks]

    condition {
      test     = "StringEquals"
      variable = "ecs:CreateAction"
      values   = ["RunTask"]
    }
  }

  statement {
    sid       = "ListTasksOnThisCluster"
    effect    = "Allow"
    actions   = ["ecs:ListTasks"]
    resources = ["*"]

    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [var.cluster_arn]
    }
  }

  statement {
    sid    = "TaskDefinitions"
    effect = "Allow"
    actions = [
      "ecs:DeregisterTaskDefinition",
      "ecs:DescribeTaskDefinition",
      "ecs:RegisterTaskDefinition",
    ]
    resources = ["*"]
  }

  statement {
    sid       = "ReadRunLogs"
    effect    = "Allow"
    actions   = ["logs:DescribeLogStreams", "logs:FilterLogEvents", "logs:GetLogEvents"]
    resources = [local.log_group_arn, "${local.log_group_arn}:log-stream:*"]
  }

  statement {
    sid       = "PassOnlyThisPoolsRolesToEcsTasks"
    effect    = "Allow"
    actions   = ["iam:PassRole"]
    resources = local.pass_roles

    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ecs-tasks.amazonaws.com"]
    }
  }

  dynamic "statement" {
    for_each = length(var.assume_role_arns) == 0 ? [] : [sort(distinct(var.assume_role_arns))]

    content {
      sid       = "AssumeThePoolsRole"
      effect    = "Allow"
      actions   = ["sts:AssumeRole"]
      resources = statement.value
    }
  }
}

resource "aws_iam_role_policy" "task" {
  name   = "skylane-worker-dispatch"
  role   = aws_iam_role.task.name
  policy = data.aws_iam_policy_document.task.json
}

# --- the task definition and the service --------------------------------------------------------

resource "aws_ecs_task_definition" "this" {
  family                   = "skylane-${local.slug}-worker"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = tostring(var.cpu)
  memory                   = tostring(var.memory)
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  container_definitions = jsonencode([
    {
      name        = "worker"
      image       = var.image
      essential   = true
      command     = local.command
      stopTimeout = var.stop_timeout
      environment = [for name, value in local.environment : { name = name, value = value }]
      # The API key by reference: ECS reads the secret at start, it is never in the definition.
      secrets = [{ name = "SKYLANE_API_KEY", valueFrom = var.api_key_secret_arn }]
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          "awslogs-group"         = aws_cloudwatch_log_group.this.name
          "awslogs-region"        = local.region
          "awslogs-stream-prefix" = "worker"
        }
      }
    }
  ])

  tags = local.tags

  lifecycle {
    precondition {
      condition     = contains(lookup(local.fargate_memory, tostring(var.cpu), []), var.memory)
      error_message = "cpu = ${var.cpu} with memory = ${var.memory} is not a Fargate combination: see the memory variable's description."
    }
  }
}

resource "aws_ecs_service" "this" {
  name            = "skylane-${local.slug}-worker"
  cluster         = local.service_cluster
  task_definition = aws_ecs_task_definition.this.arn
  desired_count   = var.desired_count
  launch_type     = "FARGATE"

  network_configuration {
    subnets          = var.subnets
    security_groups  = var.security_groups
    assign_public_ip = var.assign_public_ip
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  enable_ecs_managed_tags = true
  propagate_tags          = "SERVICE"
  wait_for_steady_state   = false

  tags = local.tags

  lifecycle {
    precondition {
      condition     = var.worker_name == null || var.desired_count <= 1
      error_message = "worker_name gives every task the same worker name: use it only with desired_count = 1 (leave it null to let each task name itself)."
    }
  }
}
