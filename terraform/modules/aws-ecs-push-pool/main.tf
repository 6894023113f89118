# What `skylane pool provision NAME --type ecs:push` creates (`ecs_steps()` in
# src/skylane/provisioning/aws.py), as Terraform resources with the same names, tags, settings
# and policies, so that importing what the provisioner made plans no change.

locals {
  # slug(pool_name) of the provisioner; see var.resource_slug and the precondition below.
  slug = coalesce(var.resource_slug, var.pool_name)
  tags = merge(var.tags, { "skylane-pool" = var.pool_name })

  account   = data.aws_caller_identity.current.account_id
  partition = data.aws_partition.current.partition
  region    = data.aws_region.current.id

  # _Aws.registry: amazonaws.com.cn in China, amazonaws.com everywhere else.
  registry_suffix = local.partition == "aws-cn" ? "amazonaws.com.cn" : "amazonaws.com"
  image_registry  = "${local.account}.dkr.ecr.${local.region}.${local.registry_suffix}"

  execution_policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"

  # trust_policy() of the provisioner.
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
  dispatcher_principal = coalesce(var.dispatcher_principal_arn, "arn:${local.partition}:iam::${local.account}:root")
  dispatcher_trust = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Effect    = "Allow"
        Principal = { AWS = local.dispatcher_principal }
        Action    = "sts:AssumeRole"
      }
    ]
  })

  # lifecycle_policy() of the provisioner.
  lifecycle_policy = jsonencode({
    rules = [
      {
        rulePriority = 1
        description  = "expire untagged images after ${var.untagged_image_days} days"
        selection = {
          tagStatus   = "untagged"
          countType   = "sinceImagePushed"
          countUnit   = "days"
          countNumber = var.untagged_image_days
        }
        action = { type = "expire" }
      }
    ]
  })

  # dispatcher_policy(): "arn:PARTITION:ecs:REGION:ACCOUNT" and the cluster's tasks.
  ecs_arn_prefix = "arn:${local.partition}:ecs:${local.region}:${local.account}"
  cluster_tasks  = "${local.ecs_arn_prefix}:task/skylane-${local.slug}/*"

  # SubnetStep: "{A.B}.{i * 16}.0/20" where A.B are the first two octets of vpc_cidr, i.e. the
  # i-th /20 of A.B.0.0/16 (for the default 10.60.0.0/16: 10.60.0.0/20 and 10.60.16.0/20).
  vpc_prefix   = join(".", slice(split(".", split("/", var.vpc_cidr)[0]), 0, 2))
  subnet_cidrs = [for i in range(2) : cidrsubnet("${local.vpc_prefix}.0.0/16", 4, i)]
  subnet_names = ["skylane-${local.slug}-1", "skylane-${local.slug}-2"]

  # What DefaultVpcStep / VpcStep, SubnetStep and SecurityGroupStep publish.
  vpc_id     = var.create_vpc ? one(aws_vpc.this[*].id) : one(data.aws_vpc.default[*].id)
  subnet_ids = var.create_vpc ? sort(aws_subnet.this[*].id) : sort(flatten(data.aws_subnets.default[*].ids))
  network_configuration = {
    for key, value in {
      subnets        = local.subnet_ids
      assignPublicIp = "ENABLED"
      securityGroups = var.create_vpc ? aws_security_group.this[*].id : null
    } : key => value if value != null
  }
}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

data "aws_region" "current" {}

# --- 1. ECR repository `skylane-<slug>` ---------------------------------------------------------

resource "aws_ecr_repository" "this" {
  name                 = "skylane-${local.slug}"
  image_tag_mutability = "MUTABLE"

  image_scanning_configuration {
    scan_on_push = true
  }

  tags = local.tags

  lifecycle {
    precondition {
      condition     = var.resource_slug != null || (can(regex("^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$", var.pool_name)))
      error_message = "The pool name \"${var.pool_name}\" is not usable as is in AWS resource names (lowercase letters, digits and dashes, not starting or ending with a dash, at most 40 characters): set the resource_slug variable to the provisioner's slug of it (`skylane pool provision --emit-terraform` writes it)."
    }
  }
}

resource "aws_ecr_lifecycle_policy" "this" {
  repository = aws_ecr_repository.this.name
  policy     = local.lifecycle_policy
}

# --- 2. task execution role `skylane-<slug>-execution` ------------------------------------------

resource "aws_iam_role" "execution" {
  name               = "skylane-${local.slug}-execution"
  description        = "skylane pool ${var.pool_name}: ECS task execution role"
  assume_role_policy = local.ecs_tasks_trust
  tags               = local.tags
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = local.execution_policy_arn
}

# --- 3. task role `skylane-<slug>-task` (no permissions) ----------------------------------------

resource "aws_iam_role" "task" {
  name               = "skylane-${local.slug}-task"
  description        = "skylane pool ${var.pool_name}: role of the runs' code"
  assume_role_policy = local.ecs_tasks_trust
  tags               = local.tags
}

# --- 4. ECS cluster `skylane-<slug>` with FARGATE and FARGATE_SPOT ------------------------------

resource "aws_ecs_cluster" "this" {
  name = "skylane-${local.slug}"
  tags = local.tags
}

resource "aws_ecs_cluster_capacity_providers" "this" {
  cluster_name       = aws_ecs_cluster.this.name
  capacity_providers = ["FARGATE", "FARGATE_SPOT"]
}

# --- 5. log group `/skylane/<slug>` -------------------------------------------------------------

resource "aws_cloudwatch_log_group" "this" {
  name              = "/skylane/${local.slug}"
  retention_in_days = var.log_retention_days
  tags              = local.tags
}

# --- 6a. networking: the region's default VPC and its subnets (read only) -----------------------

data "aws_vpc" "default" {
  count   = var.create_vpc ? 0 : 1
  default = true
}

data "aws_subnets" "default" {
  count = var.create_vpc ? 0 : 1

  filter {
    name   = "vpc-id"
    values = [data.aws_vpc.default[0].id]
  }

  lifecycle {
    postcondition {
      condition     = length(self.ids) > 0
      error_message = "The default VPC has no subnets: add some, or set create_vpc = true."
    }
  }
}

# --- 6b. networking with create_vpc -------------------------------------------------------------

resource "aws_vpc" "this" {
  count = var.create_vpc ? 1 : 0

  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true

  tags = merge(local.tags, { Name = "skylane-${local.slug}" })
}

data "aws_availability_zones" "this" {
  count = var.create_vpc ? 1 : 0
  state = "available"

  filter {
    name   = "zone-type"
    values = ["availability-zone"]
  }

  lifecycle {
    postcondition {
      condition     = length(self.names) >= 2
      error_message = "The region has fewer than 2 availability zones: create_vpc needs two."
    }
  }
}

resource "aws_subnet" "this" {
  count = var.create_vpc ? 2 : 0

  vpc_id                  = aws_vpc.this[0].id
  cidr_block              = local.subnet_cidrs[count.index]
  availability_zone       = sort(data.aws_availability_zones.this[0].names)[count.index]
  map_public_ip_on_launch = true

  tags = merge(local.tags, { Name = local.subnet_names[count.index] })
}

resource "aws_internet_gateway" "this" {
  count = var.create_vpc ? 1 : 0

  vpc_id = aws_vpc.this[0].id
  tags   = merge(local.tags, { Name = "skylane-${local.slug}" })
}

resource "aws_route_table" "this" {
  count = var.create_vpc ? 1 : 0

  vpc_id = aws_vpc.this[0].id

  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.this[0].id
  }

  tags = merge(local.tags, { Name = "skylane-${local.slug}" })
}

resource "aws_route_table_association" "this" {
  count = var.create_vpc ? 2 : 0

  subnet_id      = aws_subnet.this[count.index].id
  route_table_id = aws_route_table.this[0].id
}

resource "aws_security_group" "this" {
  count = var.create_vpc ? 1 : 0

  name        = "skylane-${local.slug}"
  description = "skylane pool ${var.pool_name}: run tasks, no ingress"
  vpc_id      = aws_vpc.this[0].id

  # No ingress at all (the provisioner revokes any it finds).
  ingress = []

  # The allow-all egress rule AWS gives every new group, which the provisioner keeps.
  egress {
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }

  # The provisioner deletes the group without revoking its rules first.
  revoke_rules_on_delete = false

  tags = merge(local.tags, { Name = "skylane-${local.slug}" })
}

# --- 7. dispatcher role `skylane-<slug>-dispatcher` ---------------------------------------------

resource "aws_iam_role" "dispatcher" {
  name               = "skylane-${local.slug}-dispatcher"
  description        = "skylane pool ${var.pool_name}: assumed by the skylane control plane"
  assume_role_policy = local.dispatcher_trust
  tags               = local.tags
}

# dispatcher_policy(cluster_arn, [execution_role_arn, task_role_arn], log_group_arn).
data "aws_iam_policy_document" "dispatch" {
  statement {
    # RunTask's resource is the task definition; the condition pins the cluster.
    sid       = "RunTasksOnThisCluster"
    effect    = "Allow"
    actions   = ["ecs:RunTask"]
    resources = ["${local.ecs_arn_prefix}:task-definition/*"]

    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [aws_ecs_cluster.this.arn]
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
      values   = [aws_ecs_cluster.this.arn]
    }
  }

  statement {
    # RunTask with tags (skylane tags every task) needs TagResource on the new task.
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
    # ListTasks has no resource-level permission; the condition pins the cluster.
    sid       = "ListTasksOnThisCluster"
    effect    = "Allow"
    actions   = ["ecs:ListTasks"]
    resources = ["*"]

    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [aws_ecs_cluster.this.arn]
    }
  }

  statement {
    # Register/Describe/DeregisterTaskDefinition support no resource-level permissions.
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
    resources = [aws_cloudwatch_log_group.this.arn, "${aws_cloudwatch_log_group.this.arn}:log-stream:*"]
  }

  statement {
    sid       = "PassOnlyThisPoolsRolesToEcsTasks"
    effect    = "Allow"
    actions   = ["iam:PassRole"]
    resources = sort(distinct([aws_iam_role.execution.arn, aws_iam_role.task.arn]))

    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ecs-tasks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "dispatch" {
  name   = "skylane-dispatch"
  role   = aws_iam_role.dispatcher.name
  policy = data.aws_iam_policy_document.dispatch.json
}
