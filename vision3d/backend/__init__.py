"""backend."""

from .gaussians import GaussianRender as GaussianRender
from .gaussians import compute_relocation as compute_relocation
from .gaussians import eval_sh as eval_sh
from .gaussians import inject_noise_to_position as inject_noise_to_position
from .gaussians import make_default_strategy as make_default_strategy
from .gaussians import project_gaussians as project_gaussians
from .gaussians import rasterize_gaussians as rasterize_gaussians
from .gaussians import rgb_to_sh as rgb_to_sh
from .gaussians import sh_to_color as sh_to_color

# Voxel half (issue 3): voxelisation, hashing, scatter ops; sparse conv blocks on spconv.
# None of these import spconv; sparse_conv does on first use.
from .sparse_conv import SparseEncoder as SparseEncoder
from .sparse_conv import build_sparse_tensor as build_sparse_tensor
from .sparse_conv import encoder_spatial_shape as encoder_spatial_shape
from .sparse_conv import encoder_stage as encoder_stage
from .sparse_conv import import_spconv as import_spconv
from .sparse_conv import sparse_conv_block as sparse_conv_block
from .sparse_conv import sparse_tensor_from_voxels as sparse_tensor_from_voxels
from .sparse_conv import spconv_available as spconv_available
from .sparse_conv import to_dense_bev as to_dense_bev
from .voxels import DynamicVoxels as DynamicVoxels
from .voxels import HardVoxels as HardVoxels
from .voxels import UniqueResult as UniqueResult
from .voxels import VoxelGrid as VoxelGrid
from .voxels import Voxelizer as Voxelizer
from .voxels import collate_voxels as collate_voxels
from .voxels import hash_coords as hash_coords
from .voxels import scatter_count as scatter_count
from .voxels import scatter_max as scatter_max
from .voxels import scatter_mean as scatter_mean
from .voxels import scatter_sum as scatter_sum
from .voxels import unhash_coords as unhash_coords
from .voxels import unique_coords as unique_coords
from .voxels import unique_keys as unique_keys
from .voxels import voxel_mean as voxel_mean
from .voxels import voxelize as voxelize
from .voxels import voxelize_dynamic as voxelize_dynamic
